//! Table: the CloudTrail table as AWS documents it for Athena, in one place.
//!
//! [`COLUMNS`] are the columns of AWS's `CREATE EXTERNAL TABLE cloudtrail_logs` (Athena
//! user guide, "Create a table for CloudTrail logs in Athena using manual partitioning"),
//! with its names and types: `useridentity`, `resources`, `addendum` and `tlsdetails` are
//! STRUCTs (and an ARRAY of STRUCT), `requestparameters`, `responseelements`,
//! `additionaleventdata`, `serviceeventdetails` and `edgedevicedetails` strings of JSON,
//! `eventtime` and `readonly` strings — so that queries written for AWS's table run on
//! ours. One column is added, `managementevent` (CloudTrail writes it on every record;
//! the DDL predates it), in both formats; Parquet adds `eventtime_ts`, the instant of
//! `eventtime` as a TIMESTAMP, and `otherfields` (see [`crate::parquet_chunks`]).
//!
//! Each column and struct field also has the key CloudTrail writes (`userIdentity`,
//! `sessionIssuer`, `ARN`): JSON keys are matched to them. From here come the Glue tables
//! of `template.yaml` (checked by `tests/template.rs`), the Parquet files' schema, the
//! DDL and DuckDB declarations `ctagg schema` prints, and the query suite's tables.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// What a column or struct field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (CloudTrail writes a JSON string).
    Str,
    /// `'true'` or `'false'` (CloudTrail writes a JSON boolean; the DDL says STRING).
    BoolText,
    /// A JSON object or array, as its JSON text (compact, as a JSON SerDe renders it).
    Json,
    /// An object, as a STRUCT of these fields.
    Struct(&'static [Col]),
    /// An array of objects, as an ARRAY of STRUCT of these fields.
    ListOf(&'static [Col]),
    /// An object of strings, as a MAP<STRING,STRING>.
    MapStr,
}

/// One column, or one field of a struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Col {
    /// The name in the table (lower case, as AWS's DDL and Athena name it).
    pub name: &'static str,
    /// The key CloudTrail writes.
    pub key: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, key: &'static str, kind: Kind) -> Col {
    Col { name, key, kind }
}

const SESSION_ISSUER: &[Col] = &[
    col("type", "type", Kind::Str),
    col("principalid", "principalId", Kind::Str),
    col("arn", "arn", Kind::Str),
    col("accountid", "accountId", Kind::Str),
    col("username", "userName", Kind::Str),
];

const SESSION_CONTEXT: &[Col] = &[
    col(
        "attributes",
        "attributes",
        Kind::Struct(&[
            col("mfaauthenticated", "mfaAuthenticated", Kind::Str),
            col("creationdate", "creationDate", Kind::Str),
        ]),
    ),
    col(
        "sessionissuer",
        "sessionIssuer",
        Kind::Struct(SESSION_ISSUER),
    ),
    col("ec2roledelivery", "ec2RoleDelivery", Kind::Str),
    col(
        "webidfederationdata",
        "webIdFederationData",
        Kind::Struct(&[
            col("federatedprovider", "federatedProvider", Kind::Str),
            col("attributes", "attributes", Kind::MapStr),
        ]),
    ),
];

const USER_IDENTITY: &[Col] = &[
    col("type", "type", Kind::Str),
    col("principalid", "principalId", Kind::Str),
    col("arn", "arn", Kind::Str),
    col("accountid", "accountId", Kind::Str),
    col("invokedby", "invokedBy", Kind::Str),
    col("accesskeyid", "accessKeyId", Kind::Str),
    col("username", "userName", Kind::Str),
    col(
        "onbehalfof",
        "onBehalfOf",
        Kind::Struct(&[
            col("userid", "userId", Kind::Str),
            col("identitystorearn", "identityStoreArn", Kind::Str),
        ]),
    ),
    col(
        "sessioncontext",
        "sessionContext",
        Kind::Struct(SESSION_CONTEXT),
    ),
];

/// The columns of AWS's CloudTrail table, in its order, then `managementevent`.
pub const COLUMNS: &[Col] = &[
    col("eventversion", "eventVersion", Kind::Str),
    col("useridentity", "userIdentity", Kind::Struct(USER_IDENTITY)),
    col("eventtime", "eventTime", Kind::Str),
    col("eventsource", "eventSource", Kind::Str),
    col("eventname", "eventName", Kind::Str),
    col("awsregion", "awsRegion", Kind::Str),
    col("sourceipaddress", "sourceIPAddress", Kind::Str),
    col("useragent", "userAgent", Kind::Str),
    col("errorcode", "errorCode", Kind::Str),
    col("errormessage", "errorMessage", Kind::Str),
    col("requestparameters", "requestParameters", Kind::Json),
    col("responseelements", "responseElements", Kind::Json),
    col("additionaleventdata", "additionalEventData", Kind::Json),
    col("requestid", "requestID", Kind::Str),
    col("eventid", "eventID", Kind::Str),
    col(
        "resources",
        "resources",
        Kind::ListOf(&[
            col("arn", "ARN", Kind::Str),
            col("accountid", "accountId", Kind::Str),
            col("type", "type", Kind::Str),
        ]),
    ),
    col("eventtype", "eventType", Kind::Str),
    col("apiversion", "apiVersion", Kind::Str),
    col("readonly", "readOnly", Kind::BoolText),
    col("recipientaccountid", "recipientAccountId", Kind::Str),
    col("serviceeventdetails", "serviceEventDetails", Kind::Json),
    col("sharedeventid", "sharedEventID", Kind::Str),
    col("vpcendpointid", "vpcEndpointId", Kind::Str),
    col("vpcendpointaccountid", "vpcEndpointAccountId", Kind::Str),
    col("eventcategory", "eventCategory", Kind::Str),
    col(
        "addendum",
        "addendum",
        Kind::Struct(&[
            col("reason", "reason", Kind::Str),
            col("updatedfields", "updatedFields", Kind::Str),
            col("originalrequestid", "originalRequestID", Kind::Str),
            col("originaleventid", "originalEventID", Kind::Str),
        ]),
    ),
    col(
        "sessioncredentialfromconsole",
        "sessionCredentialFromConsole",
        Kind::Str,
    ),
    col("edgedevicedetails", "edgeDeviceDetails", Kind::Json),
    col(
        "tlsdetails",
        "tlsDetails",
        Kind::Struct(&[
            col("tlsversion", "tlsVersion", Kind::Str),
            col("ciphersuite", "cipherSuite", Kind::Str),
            col(
                "clientprovidedhostheader",
                "clientProvidedHostHeader",
                Kind::Str,
            ),
        ]),
    ),
    col("managementevent", "managementEvent", Kind::BoolText),
];

/// Parquet's added column: `eventtime` as a TIMESTAMP (UTC, microseconds).
pub const EVENTTIME_TS: &str = "eventtime_ts";
/// Parquet's last column: what no column holds exactly, as a JSON object (or null).
pub const OTHER_FIELDS: &str = "otherfields";

/// The Hive (Glue, Athena DDL) type of `kind`: `string`, `struct<…>`, `array<…>`, `map<…>`.
pub fn hive_type(kind: Kind) -> String {
    let fields = |cols: &[Col]| {
        cols.iter()
            .map(|c| format!("{}:{}", c.name, hive_type(c.kind)))
            .collect::<Vec<_>>()
            .join(",")
    };
    match kind {
        Kind::Str | Kind::BoolText | Kind::Json => "string".into(),
        Kind::Struct(cols) => format!("struct<{}>", fields(cols)),
        Kind::ListOf(cols) => format!("array<struct<{}>>", fields(cols)),
        Kind::MapStr => "map<string,string>".into(),
    }
}

/// The DuckDB type that reads `kind` from NDJSON as the table declares it, struct fields
/// named as CloudTrail spells its keys (DuckDB matches JSON keys exactly; its SQL then
/// finds `useridentity.sessionissuer` whatever the case).
pub fn duckdb_type(kind: Kind) -> String {
    let fields = |cols: &[Col]| {
        cols.iter()
            .map(|c| format!("\"{}\" {}", c.key, duckdb_type(c.kind)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        Kind::Str | Kind::BoolText | Kind::Json => "VARCHAR".into(),
        Kind::Struct(cols) => format!("STRUCT({})", fields(cols)),
        Kind::ListOf(cols) => format!("STRUCT({})[]", fields(cols)),
        Kind::MapStr => "MAP(VARCHAR, VARCHAR)".into(),
    }
}

/// DuckDB's `read_json(…, columns = {…})` argument for the NDJSON table.
pub fn duckdb_columns() -> String {
    let mut s = String::from("{");
    for (i, c) in COLUMNS.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "'{}': '{}'", c.key, duckdb_type(c.kind));
    }
    s.push('}');
    s
}

/// The Arrow type of `kind` (Parquet files), names in lower case.
pub fn arrow_type(kind: Kind) -> DataType {
    let fields = |cols: &[Col]| -> Fields {
        cols.iter()
            .map(|c| Field::new(c.name, arrow_type(c.kind), true))
            .collect()
    };
    match kind {
        Kind::Str | Kind::BoolText | Kind::Json => DataType::Utf8,
        Kind::Struct(cols) => DataType::Struct(fields(cols)),
        Kind::ListOf(cols) => DataType::List(Arc::new(Field::new(
            "element",
            DataType::Struct(fields(cols)),
            true,
        ))),
        Kind::MapStr => DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(
                    vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Utf8, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        ),
    }
}

/// The Arrow schema of the Parquet files: [`COLUMNS`], [`EVENTTIME_TS`], [`OTHER_FIELDS`];
/// every column nullable.
pub fn arrow_schema() -> SchemaRef {
    let mut fields: Vec<Field> = COLUMNS
        .iter()
        .map(|c| Field::new(c.name, arrow_type(c.kind), true))
        .collect();
    fields.push(Field::new(
        EVENTTIME_TS,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    ));
    fields.push(Field::new(OTHER_FIELDS, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Which table a DDL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Ndjson,
    Parquet,
}

/// The columns of a table, as `(name, Hive type)`.
pub fn table_columns(format: TableFormat) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|c| (c.name.to_string(), hive_type(c.kind)))
        .collect();
    if format == TableFormat::Parquet {
        cols.push((EVENTTIME_TS.into(), "timestamp".into()));
        cols.push((OTHER_FIELDS.into(), "string".into()));
    }
    cols
}

/// `CREATE EXTERNAL TABLE` for Athena over `location` (`s3://bucket/prefix/`), partitioned
/// by `year`, `month`, `day` with partition projection (as the template's Glue tables).
pub fn athena_ddl(format: TableFormat, table: &str, location: &str) -> String {
    let location = if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    };
    let mut s = format!("CREATE EXTERNAL TABLE {table} (\n");
    let cols = table_columns(format);
    for (i, (name, ty)) in cols.iter().enumerate() {
        let comma = if i + 1 < cols.len() { "," } else { "" };
        let _ = writeln!(s, "  {name} {}{comma}", ty.to_uppercase_keywords());
    }
    s.push_str(")\nPARTITIONED BY (year string, month string, day string)\n");
    match format {
        TableFormat::Ndjson => s.push_str(
            "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
             WITH SERDEPROPERTIES ('case.insensitive' = 'true')\n\
             STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\n\
             OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n",
        ),
        TableFormat::Parquet => s.push_str("STORED AS PARQUET\n"),
    }
    let _ = write!(
        s,
        "LOCATION '{location}'\nTBLPROPERTIES (\n  'projection.enabled' = 'true',\n  \
         'projection.year.type' = 'integer', 'projection.year.range' = '2013,2099',\n  \
         'projection.month.type' = 'integer', 'projection.month.range' = '1,12', 'projection.month.digits' = '2',\n  \
         'projection.day.type' = 'integer', 'projection.day.range' = '1,31', 'projection.day.digits' = '2',\n  \
         'storage.location.template' = '{location}${{year}}/${{month}}/${{day}}/'\n);\n"
    );
    s
}

trait Keywords {
    fn to_uppercase_keywords(&self) -> String;
}

impl Keywords for String {
    /// `struct<a:string>` → `STRUCT<a:STRING>`, as AWS's DDL writes types.
    fn to_uppercase_keywords(&self) -> String {
        let mut out = self.clone();
        for kw in ["struct<", "array<", "map<", "string", "timestamp"] {
            out = out.replace(kw, &kw.to_uppercase());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The types AWS's DDL declares, column for column.
    #[test]
    fn types_as_aws_declares_them() {
        let ddl: Vec<(String, String)> = table_columns(TableFormat::Ndjson);
        let get = |n: &str| ddl.iter().find(|(c, _)| c == n).unwrap().1.clone();
        assert_eq!(
            get("useridentity"),
            "struct<type:string,principalid:string,arn:string,accountid:string,invokedby:string,\
             accesskeyid:string,username:string,onbehalfof:struct<userid:string,identitystorearn:string>,\
             sessioncontext:struct<attributes:struct<mfaauthenticated:string,creationdate:string>,\
             sessionissuer:struct<type:string,principalid:string,arn:string,accountid:string,username:string>,\
             ec2roledelivery:string,webidfederationdata:struct<federatedprovider:string,attributes:map<string,string>>>>"
        );
        assert_eq!(
            get("resources"),
            "array<struct<arn:string,accountid:string,type:string>>"
        );
        assert_eq!(
            get("tlsdetails"),
            "struct<tlsversion:string,ciphersuite:string,clientprovidedhostheader:string>"
        );
        assert_eq!(get("addendum"), "struct<reason:string,updatedfields:string,originalrequestid:string,originaleventid:string>");
        for s in [
            "eventtime",
            "readonly",
            "requestparameters",
            "responseelements",
            "additionaleventdata",
            "serviceeventdetails",
            "edgedevicedetails",
        ] {
            assert_eq!(get(s), "string", "{s}");
        }
        // AWS's 29 columns, then managementevent.
        assert_eq!(ddl.len(), 30);
        let parquet = table_columns(TableFormat::Parquet);
        assert_eq!(parquet.len(), 32);
        assert_eq!(parquet[30], ("eventtime_ts".into(), "timestamp".into()));
        assert_eq!(arrow_schema().fields().len(), 32);
    }

    /// The DuckDB declaration names CloudTrail's keys.
    #[test]
    fn duckdb_declaration() {
        let cols = duckdb_columns();
        assert!(cols
            .starts_with("{'eventVersion': 'VARCHAR', 'userIdentity': 'STRUCT(\"type\" VARCHAR"));
        assert!(cols.contains(
            "'resources': 'STRUCT(\"ARN\" VARCHAR, \"accountId\" VARCHAR, \"type\" VARCHAR)[]'"
        ));
        assert!(cols.contains("\"attributes\" MAP(VARCHAR, VARCHAR)"));
    }

    /// The DDL reads like AWS's, with our partitions and SerDe.
    #[test]
    fn ddl() {
        let ddl = athena_ddl(
            TableFormat::Ndjson,
            "cloudtrail_daily",
            "s3://b/cloudtrail-daily",
        );
        assert!(ddl.starts_with("CREATE EXTERNAL TABLE cloudtrail_daily (\n  eventversion STRING,\n  useridentity STRUCT<type:STRING,"));
        assert!(ddl.contains("  managementevent STRING\n)"));
        assert!(ddl.contains("LOCATION 's3://b/cloudtrail-daily/'"));
        assert!(ddl.contains(
            "'storage.location.template' = 's3://b/cloudtrail-daily/${year}/${month}/${day}/'"
        ));
        let pq = athena_ddl(TableFormat::Parquet, "t", "s3://b/p/");
        assert!(pq.contains("  eventtime_ts TIMESTAMP,\n  otherfields STRING\n)"));
        assert!(pq.contains("STORED AS PARQUET"));
    }
}
