-- AWS, Athena user guide, "Query examples for CloudTrail logs": all anonymous (unsigned)
-- requests. The page's placeholder '[your bucket name ]' is 'example-bucket' here.
SELECT *
FROM cloudtrail_logs
WHERE
    eventsource = 's3.amazonaws.com' AND
    eventname in ('GetObject') AND
    useridentity.accountid = 'anonymous' AND
    useridentity.arn IS NULL AND
    requestparameters LIKE '%example-bucket%';
