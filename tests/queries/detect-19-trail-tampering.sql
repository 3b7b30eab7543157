-- Detection: CloudTrail logging stopped or trails deleted.
SELECT eventtime, eventname, useridentity.arn, json_extract_scalar(requestparameters, '$.name') AS trail
FROM cloudtrail_logs
WHERE eventsource = 'cloudtrail.amazonaws.com'
  AND eventname IN ('StopLogging', 'DeleteTrail', 'UpdateTrail')
