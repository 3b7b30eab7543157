-- AWS, Amazon S3 user guide: the requesters sending Signature Version 2 traffic.
SELECT useridentity.arn, Count(requestid) as RequestCount
FROM cloudtrail_logs
WHERE eventsource='s3.amazonaws.com'
    and json_extract_scalar(additionalEventData, '$.SignatureVersion')='SigV2'
Group by useridentity.arn
