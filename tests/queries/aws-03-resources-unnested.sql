-- AWS, Athena user guide, "Query nested fields in CloudTrail logs": the rows whose resource
-- ARN ends in example/datafile.txt (resources is an ARRAY of STRUCT).
SELECT
    awsregion,
    replace(unnested.resources_entry.ARN,'arn:aws:s3:::') as s3_resource,
    eventname,
    eventtime,
    useragent
FROM cloudtrail_logs t
CROSS JOIN UNNEST(t.resources) unnested (resources_entry)
WHERE unnested.resources_entry.ARN LIKE '%example/datafile.txt'
ORDER BY eventtime
