-- name: get_replica_lag$
-- Seconds the server's replay is behind its primary: 0 when it has replayed all the WAL it
-- received (or is no standby at all), else the age of the last transaction it replayed; NULL
-- when unknown (nothing replayed since it started). A standby cut off from its primary has
-- replayed all it received and answers 0: the WAL receiver's state is not looked at.
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
       END::float8;
