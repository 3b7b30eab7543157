-- sessioncontext.attributes: sessions with and without MFA.
SELECT useridentity.sessioncontext.attributes.mfaauthenticated AS mfa, count(*) AS calls
FROM cloudtrail_logs
WHERE useridentity.sessioncontext.attributes.mfaauthenticated IS NOT NULL
GROUP BY useridentity.sessioncontext.attributes.mfaauthenticated
