-- Detection: successful console logins without MFA.
SELECT useridentity.arn, useridentity.type, sourceipaddress, eventtime
FROM cloudtrail_logs
WHERE eventname = 'ConsoleLogin'
  AND json_extract_scalar(additionaleventdata, '$.MFAUsed') = 'No'
  AND json_extract_scalar(responseelements, '$.ConsoleLogin') = 'Success'
