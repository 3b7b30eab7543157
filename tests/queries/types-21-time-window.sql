-- eventtime is a string, as in AWS's table: from_iso8601_timestamp turns it into a time.
SELECT eventname, eventtime
FROM cloudtrail_logs
WHERE from_iso8601_timestamp(eventtime) >= from_iso8601_timestamp('2024-02-13T09:00:00Z')
  AND from_iso8601_timestamp(eventtime) < from_iso8601_timestamp('2024-02-13T12:00:00Z')
