-- Detection: changes to IAM (calls that are not read-only).
SELECT eventtime, eventname, useridentity.arn, json_extract_scalar(requestparameters, '$.roleName') AS role_name
FROM cloudtrail_logs
WHERE eventsource = 'iam.amazonaws.com' AND readonly = 'false'
ORDER BY eventtime
