-- readonly is 'true' or 'false', as in AWS's table (CloudTrail writes a JSON boolean).
SELECT readonly, managementevent, count(*) AS events
FROM cloudtrail_logs
GROUP BY readonly, managementevent
