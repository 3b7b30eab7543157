-- Detection: sessions of assumed roles, by the role that issued them.
SELECT useridentity.sessioncontext.sessionissuer.arn AS role,
       useridentity.sessioncontext.sessionissuer.username AS role_name,
       count(*) AS calls
FROM cloudtrail_logs
WHERE useridentity.type = 'AssumedRole'
GROUP BY useridentity.sessioncontext.sessionissuer.arn, useridentity.sessioncontext.sessionissuer.username
