-- A tiny query mix for the CI's capture (about 40 MB of memtrace.out, 1.5 s).
CREATE TABLE t(a, b);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200)
INSERT INTO t SELECT x, hex(randomblob(50)) FROM c;
SELECT count(*), max(b) FROM t;
