-- Overview: the resources named in events, by type (resources unnested).
SELECT r.type, count(*) AS mentions
FROM cloudtrail_logs
CROSS JOIN UNNEST(resources) AS u (r)
GROUP BY r.type
