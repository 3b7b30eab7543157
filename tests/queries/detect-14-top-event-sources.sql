-- Overview: the busiest event sources.
SELECT eventsource, count(*) AS events
FROM cloudtrail_logs
GROUP BY eventsource
ORDER BY events DESC, eventsource
