-- AWS, Amazon S3 user guide, "Identifying Amazon S3 requests using CloudTrail": Signature
-- Version 2 events, printing EventTime, S3 action, request parameters, region, IP, agent.
SELECT EventTime, EventName as S3_Action, requestParameters as Request_Parameters, awsregion as AWS_Region, sourceipaddress as Source_IP, useragent as User_Agent
FROM cloudtrail_logs
WHERE eventsource='s3.amazonaws.com'
AND json_extract_scalar(additionalEventData, '$.SignatureVersion')='SigV2'
LIMIT 10;
