-- Investigation: everything done from one source IP address.
SELECT eventtime, eventsource, eventname, useridentity.arn, errorcode
FROM cloudtrail_logs
WHERE sourceipaddress = '203.0.113.5'
ORDER BY eventtime
