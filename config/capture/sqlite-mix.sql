-- A small query mix for sqlite3 under `memtrace record` (workloads.sqlite in
-- config/config.yaml): bulk insert, an index build, a group-by, a self-join, an update
-- and a delete over an in-memory table of 3000 rows with 200-byte payloads. Recorded it
-- is about 780 MB of memtrace.out (32 million loads and stores on about 1000 pages)
-- and takes about 2 s on the 2-core reference machine.
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000)
INSERT INTO t SELECT x, (x * 7919) % 1000, hex(randomblob(200)) FROM c;
CREATE INDEX tk ON t(k);
SELECT k, count(*), max(v) FROM t GROUP BY k ORDER BY 2 DESC LIMIT 5;
SELECT count(*) FROM t a JOIN t b ON a.k = b.k WHERE a.id < 200;
UPDATE t SET v = upper(v) WHERE k % 3 = 0;
DELETE FROM t WHERE k % 5 = 0;
SELECT sum(length(v)) FROM t;
