-- Investigation: S3 data events on one bucket, with the object keys.
SELECT eventtime, eventname, useridentity.arn, json_extract_scalar(requestparameters, '$.key') AS object_key
FROM cloudtrail_logs
WHERE eventcategory = 'Data'
  AND json_extract_scalar(requestparameters, '$.bucketName') = 'example-bucket'
