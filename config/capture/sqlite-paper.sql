-- The paper study's query mix (config/paper.yaml): the default mix (sqlite-mix.sql) on
-- 12000 rows. Recorded it is about 3 GB of memtrace.out; the rule deletes it once ingested.
CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 12000)
INSERT INTO t SELECT x, (x * 7919) % 1000, hex(randomblob(200)) FROM c;
CREATE INDEX tk ON t(k);
SELECT k, count(*), max(v) FROM t GROUP BY k ORDER BY 2 DESC LIMIT 5;
SELECT count(*) FROM t a JOIN t b ON a.k = b.k WHERE a.id < 800;
UPDATE t SET v = upper(v) WHERE k % 3 = 0;
DELETE FROM t WHERE k % 5 = 0;
SELECT sum(length(v)) FROM t;
