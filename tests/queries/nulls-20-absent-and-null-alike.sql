-- One meaning of NULL: a JSON null and an absent key both read as SQL NULL.
SELECT count(*) AS n,
       count(responseelements) AS with_response,
       count(requestparameters) AS with_request,
       count(errorcode) AS with_error
FROM cloudtrail_logs
WHERE responseelements IS NULL
