"""Dagster instance parts that a deployment's ``dagster.yaml`` names: loaded by every Dagster process (webserver,
daemon, code server, run workers), so they import Dagster and its PostgreSQL storage only, never the code
location."""
