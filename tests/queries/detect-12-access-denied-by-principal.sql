-- Detection: calls refused for lack of permission, by principal.
SELECT useridentity.arn, errorcode, count(*) AS denied
FROM cloudtrail_logs
WHERE errorcode IN ('AccessDenied', 'Client.UnauthorizedOperation', 'UnauthorizedOperation')
GROUP BY useridentity.arn, errorcode
