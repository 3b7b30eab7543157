-- AWS, Amazon S3 user guide: PUT object requests with bucket, object and user ARN (the
-- guide's 2019 window is 2024-02-13 here).
SELECT
  eventTime,
  eventName,
  eventSource,
  sourceIpAddress,
  userAgent,
  json_extract_scalar(requestParameters, '$.bucketName') as bucketName,
  json_extract_scalar(requestParameters, '$.key') as object,
  userIdentity.arn as userArn
FROM
  cloudtrail_logs
WHERE
  eventName = 'PutObject'
  AND eventTime BETWEEN '2024-02-13T00:00:00Z' and '2024-02-14T00:00:00Z'
