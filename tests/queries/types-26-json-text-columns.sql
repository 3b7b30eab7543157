-- requestparameters, responseelements, serviceeventdetails: JSON text, read with JSON functions.
SELECT eventname,
       json_extract_scalar(requestparameters, '$.userName') AS user_name,
       json_extract_scalar(responseelements, '$.user.arn') AS created,
       json_extract_scalar(serviceeventdetails, '$.role_name') AS service_role
FROM cloudtrail_logs
WHERE json_extract_scalar(requestparameters, '$.userName') IS NOT NULL
   OR json_extract_scalar(serviceeventdetails, '$.role_name') IS NOT NULL
