-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d),
-- as the superuser. Creates what deploy/local/postgres.sh creates for a local run:
-- the services' database and the demo target the demo agent manages. Dev/demo only:
-- the passwords are the role names.

-- Cluster-wide roles.
CREATE ROLE lapse       LOGIN CREATEDB   PASSWORD 'lapse';
CREATE ROLE lapse_agent LOGIN CREATEROLE PASSWORD 'lapse_agent';
CREATE ROLE alice       LOGIN            PASSWORD 'alice';
CREATE ROLE bob         LOGIN            PASSWORD 'bob';
CREATE ROLE demo_read   NOLOGIN;
CREATE ROLE demo_write  NOLOGIN;

-- The connector agent (lapse_agent) grants and revokes the demo group roles. Up to
-- PostgreSQL 15 CREATEROLE is enough; from 16 on it needs ADMIN OPTION on each role, and
-- INHERIT/SET FALSE keep it from using the privileges it hands out. Checked at run time
-- so the script still works if the image is switched to an older major version.
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 160000 THEN
    EXECUTE 'GRANT demo_read, demo_write TO lapse_agent WITH ADMIN TRUE, INHERIT FALSE, SET FALSE';
  END IF;
END
$$;

-- Each service creates its own schema in this database.
CREATE DATABASE lapse OWNER lapse;
CREATE DATABASE demo_target;

-- Demo target contents: a small table whose access is governed by demo_read/demo_write,
-- so a granted (or revoked) just-in-time membership is visible to alice and bob.
\connect demo_target

CREATE TABLE public.customers (
  id    serial PRIMARY KEY,
  name  text NOT NULL,
  email text NOT NULL
);
INSERT INTO public.customers (name, email) VALUES
  ('Ada Lovelace', 'ada@example.com'),
  ('Grace Hopper', 'grace@example.com'),
  ('Alan Turing',  'alan@example.com');

GRANT SELECT ON ALL TABLES IN SCHEMA public TO demo_read;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO demo_write;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO demo_write;
GRANT CONNECT ON DATABASE demo_target TO alice, bob, lapse_agent;
