//! The table's schema: its names, and how `keyward table create` makes it.

use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

use super::{DynamoStore, backend};
use crate::store::StoreError;

/// The table's names, shared with `keyward table create` and checked against the SAM template.
pub mod table {
    /// Partition key of the table.
    pub const PK: &str = "pk";
    /// Sort key of the table.
    pub const SK: &str = "sk";
    /// The global secondary index of keys by environment, and of the list of environments.
    pub const GSI1: &str = "gsi1";
    /// Partition key of `gsi1`.
    pub const GSI1_PK: &str = "gsi1pk";
    /// Sort key of `gsi1`.
    pub const GSI1_SK: &str = "gsi1sk";
    /// The sparse, keys-only index of keys by when the schedule next has something to do.
    pub const GSI2: &str = "gsi2";
    /// Partition key of `gsi2`: always [`DUE`], on the key items that are due some time.
    pub const GSI2_PK: &str = "gsi2pk";
    /// Sort key of `gsi2`: the due time, then the key id.
    pub const GSI2_SK: &str = "gsi2sk";
    /// The one partition of `gsi2`.
    pub const DUE: &str = "DUE";
    /// Every attribute a key schema names, the table's and both indexes': all strings.
    pub const KEY_ATTRIBUTES: [&str; 6] = [PK, SK, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK];
    /// The attribute DynamoDB's TTL reads on hash items, in epoch seconds.
    pub const TTL: &str = "ttl";
    /// Prefix of key items' partition keys, `KEY#<key id>`.
    pub(crate) const KEY_PREFIX: &str = "KEY#";
    /// The sort key of a key item.
    pub(crate) const KEY_SK: &str = "KEY";
    /// Prefix of hash items' partition keys; the stream publisher watches their removal.
    pub const HASH_PREFIX: &str = "HASH#";
    /// The sort key of a hash item.
    pub(crate) const HASH_SK: &str = "HASH";
    /// Prefix of environment items' partition keys, and of their keys' `gsi1pk`.
    pub(crate) const ENV_PREFIX: &str = "ENV#";
    /// The sort key of an environment item.
    pub(crate) const ENV_SK: &str = "ENV";
    /// The `gsi1pk` of every environment item: the list of environments.
    pub(crate) const ENVIRONMENTS: &str = "ENVIRONMENTS";
    /// Prefix of a key's activity items, `KEYACT#<key id>`.
    pub(crate) const KEY_ACTIVITY_PREFIX: &str = "KEYACT#";
    /// Prefix of secret claim items' partition keys, `CLAIM#<env>#<secret>`.
    pub(crate) const CLAIM_PREFIX: &str = "CLAIM#";
    /// The sort key of a secret claim item.
    pub(crate) const CLAIM_SK: &str = "CLAIM";
    /// Prefix of the activity items that the stream publisher turns into events.
    pub const OUTBOX_PREFIX: &str = "ENVACT#";
    /// Prefix of a key's usage items, `USAGE#<env>#<key id>`; the stream publisher moves its
    /// last use forward when an hour's item is written.
    pub const USAGE_PREFIX: &str = "USAGE#";
    /// Prefix of the sort key of a usage item for one hour.
    pub const HOUR_PREFIX: &str = "H#";
    /// Prefix of the sort key of the item that holds the addresses one hour's accepted checks
    /// came from, beside the hour's counts and apart from them, so that its growth can never
    /// fail the counts' write.
    pub const SEEN_PREFIX: &str = "S#";
    /// The sort key of a key's last use item.
    pub const LAST: &str = "LAST";
}

impl DynamoStore {
    /// Creates the table with its indexes, stream and TTL, as `keyward table create` does.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        self.create_table_request()?
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(table::TTL)
                    .build()
                    .map_err(backend)?,
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The table's `CreateTable` request with its keys, both indexes and on-demand billing,
    /// but no stream: [`DynamoStore::create_table`] adds the stream, and a benchmark that
    /// reads none sends it as it is (moto copies a table's stream records on every write).
    pub fn create_table_request(&self) -> Result<CreateTableFluentBuilder, StoreError> {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = |name: &str, pk: &str, sk: &str, projection: ProjectionType| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash).map_err(backend)?)
                .key_schema(key(sk, KeyType::Range).map_err(backend)?)
                .projection(Projection::builder().projection_type(projection).build())
                .build()
                .map_err(backend)
        };
        let gsi = index(
            table::GSI1,
            table::GSI1_PK,
            table::GSI1_SK,
            ProjectionType::All,
        )?;
        let due = index(
            table::GSI2,
            table::GSI2_PK,
            table::GSI2_SK,
            ProjectionType::KeysOnly,
        )?;
        let mut create = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest);
        for name in table::KEY_ATTRIBUTES {
            create = create.attribute_definitions(attribute(name).map_err(backend)?);
        }
        Ok(create
            .key_schema(key(table::PK, KeyType::Hash).map_err(backend)?)
            .key_schema(key(table::SK, KeyType::Range).map_err(backend)?)
            .global_secondary_indexes(gsi)
            .global_secondary_indexes(due))
    }

    /// The table's stream ARN, for the local stream poller.
    pub async fn stream_arn(&self) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.table.and_then(|t| t.latest_stream_arn))
    }
}
