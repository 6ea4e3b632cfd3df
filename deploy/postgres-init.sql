-- The compose stack's PostgreSQL holds the collector's store (database `choreoscope`, created by
-- POSTGRES_DB) and the order-service's own database with its outbox table (`shop`).
CREATE DATABASE shop;
