-- tlsdetails is a STRUCT.
SELECT tlsdetails.tlsversion, tlsdetails.ciphersuite, count(*) AS calls
FROM cloudtrail_logs
WHERE tlsdetails IS NOT NULL
GROUP BY tlsdetails.tlsversion, tlsdetails.ciphersuite
