-- AWS, Amazon S3 user guide: anonymous requester events to a bucket in a period.
SELECT
  eventTime,
  eventName,
  eventSource,
  sourceIpAddress,
  userAgent,
  json_extract_scalar(requestParameters, '$.bucketName') as bucketName,
  userIdentity.arn as userArn,
  userIdentity.accountId
FROM
  cloudtrail_logs
WHERE
  userIdentity.accountId='ANONYMOUS_PRINCIPAL'
  AND eventTime BETWEEN '2024-02-13T00:00:00Z' and '2024-02-14T00:00:00Z'
