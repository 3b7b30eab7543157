-- AWS, Athena user guide, "Tips for querying CloudTrail logs": the template query.
SELECT
useridentity.arn,
eventname,
sourceipaddress,
eventtime
FROM cloudtrail_logs
LIMIT 100;
