"""The PostgreSQL backend (psycopg 3): imported only when a ``postgresql://`` URL is used."""
