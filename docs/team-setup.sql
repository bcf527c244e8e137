-- Handover Vault: PostgreSQL setup for a team vault (DESIGN §12, docs/spec.md "Team database setup").
--
-- Two roles:
--   handover_owner  owns the schema and runs the migrations (`handover team init`, upgrades).
--   handover_app    what every technician's `handover` connects as day to day: it reads and writes
--                   rows, can only append to the audit log, and can change no table's definition.
--
-- Schema 0006 adds triggers that make `audit` append-only for every role, the superuser
-- included. This file adds the second layer: the application role is never granted UPDATE
-- (beyond commitment and mac), DELETE or TRUNCATE on `audit`, and it does not own the table,
-- so it cannot drop or disable the triggers either (only the owner or a superuser can).
--
-- Procedure, as a superuser (revoking from PUBLIC and setting another role's default privileges
-- need one), connected to the team's database, which you have created (e.g. CREATE DATABASE
-- handover), with psql -v ON_ERROR_STOP=1:
--   1. psql -d handover -f docs/team-setup.sql      the roles and the schema's privileges
--   2. handover team init --db postgresql+psycopg://handover_owner@HOST/handover
--                                                    the owner creates the tables (Alembic; until that
--                                                    command exists, Alembic's upgrade to head as
--                                                    handover_owner, as tests/test_pg_audit_guard.py does)
--   3. psql -d handover -f docs/team-setup.sql      again: now the tables exist, `audit` is narrowed
-- Run it again after every schema upgrade; every statement here can run any number of times.
-- Between steps 2 and 3 the default privileges below give handover_app UPDATE and DELETE on
-- `audit` as on every table; the trigger refuses both meanwhile.
--
-- No password is set here: give each role one with psql's \password (it is sent hashed, never
-- logged), or use certificate authentication, and allow them in pg_hba.conf with scram-sha-256.

-- The roles. LOGIN, and nothing else: no superuser, no CREATEDB, no CREATEROLE, no
-- replication, no BYPASSRLS. NOINHERIT keeps handover_app from ever picking up another role's
-- rights should someone grant it membership later. (A DO block, because CREATE ROLE has no
-- IF NOT EXISTS.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'handover_owner') THEN
        CREATE ROLE handover_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'handover_app') THEN
        CREATE ROLE handover_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
            NOINHERIT;
    END IF;
END
$$;

-- This database only: nobody but these two roles (and superusers) may connect or make temporary
-- tables in it. PUBLIC has CONNECT and TEMPORARY on every new database by default.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO handover_owner, handover_app', current_database());
END
$$;

-- The tables live in the public schema. Nobody else may create objects there (already
-- PostgreSQL 15's default; said again for older servers). The owner creates the tables; the
-- application may only look them up.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO handover_owner;
GRANT USAGE ON SCHEMA public TO handover_app;

-- Tables the owner creates from now on (later migrations) are readable and writable by the
-- application at once. No TRUNCATE, REFERENCES or TRIGGER: the application never needs them.
ALTER DEFAULT PRIVILEGES FOR ROLE handover_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO handover_app;

-- The same for the tables that exist already (none before the first migration).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO handover_app;

-- Once the schema exists (step 3): the two tables the application must not rewrite.
DO $$
BEGIN
    IF to_regclass('public.audit') IS NOT NULL THEN
        -- The audit log: read and append only. No UPDATE of whole rows, no DELETE, no TRUNCATE.
        REVOKE ALL ON TABLE public.audit FROM handover_app;
        GRANT SELECT, INSERT ON TABLE public.audit TO handover_app;
        -- Only these three columns, because the transaction that appends an entry writes its
        -- state commitment, MAC and member's signature again as it ends (AuditLog.reseal); the
        -- trigger refuses even that in any later transaction.
        GRANT UPDATE (commitment, mac, signature) ON TABLE public.audit TO handover_app;
    END IF;
    IF to_regclass('public.alembic_version') IS NOT NULL THEN
        -- The schema version: the application checks it on open; only the owner changes it.
        REVOKE ALL ON TABLE public.alembic_version FROM handover_app;
        GRANT SELECT ON TABLE public.alembic_version TO handover_app;
    END IF;
END
$$;
