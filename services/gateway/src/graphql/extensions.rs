//! Two schema extensions that see every GraphQL request before it runs:
//!
//! - [`OperationLabel`] names the request for metrics: `graphql <type> <root fields>`
//!   (e.g. `graphql query order`), from the parsed document, so the label's values are
//!   bounded by the schema, not by client-chosen operation names.
//! - [`CodedRejections`] gives parse and validation failures, including the depth and
//!   complexity limits, `extensions.code = BAD_USER_INPUT` (and `extensions.limit`), so a
//!   client can tell a refused query from a failed one.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{ServerError, ServerResult, ValidationResult, Variables};

/// Most root fields named in a label; more are summarised as `+more`.
const MAX_LABEL_FIELDS: usize = 3;

/// Where [`OperationLabel`] leaves the label of one request (put into the request's data
/// by the HTTP handler, read back after execution).
#[derive(Debug, Default, Clone)]
pub struct OperationSlot {
    /// The operation the request asked for (`operationName`), when it named one.
    requested: Option<String>,
    label: Arc<Mutex<Option<String>>>,
}

impl OperationSlot {
    pub fn new(requested: Option<String>) -> Self {
        OperationSlot {
            requested,
            label: Arc::default(),
        }
    }

    /// The label, or `graphql invalid` when the document did not parse.
    pub fn label(&self) -> String {
        self.label
            .lock()
            .ok()
            .and_then(|label| label.clone())
            .unwrap_or_else(|| "graphql invalid".to_owned())
    }
}

/// `graphql <type> <root fields>` for the operation `requested` (or the only one).
fn label(document: &ExecutableDocument, requested: Option<&str>) -> Option<String> {
    let operation = document
        .operations
        .iter()
        .find(|(name, _)| requested.is_none() || name.map(|n| n.as_str()) == requested)
        .map(|(_, operation)| &operation.node)?;
    let kind = match operation.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let mut fields: Vec<&str> = operation
        .selection_set
        .node
        .items
        .iter()
        .filter_map(|selection| match &selection.node {
            Selection::Field(field) => Some(field.node.name.node.as_str()),
            _ => None,
        })
        .collect();
    fields.sort_unstable();
    fields.dedup();
    let more = fields.len() > MAX_LABEL_FIELDS;
    fields.truncate(MAX_LABEL_FIELDS);
    let mut label = format!("graphql {kind} {}", fields.join("+"));
    if more {
        label.push_str("+more");
    }
    Some(label)
}

pub struct OperationLabel;

impl ExtensionFactory for OperationLabel {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationLabel)
    }
}

#[async_trait::async_trait]
impl Extension for OperationLabel {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(slot) = ctx.data_opt::<OperationSlot>()
            && let Ok(mut stored) = slot.label.lock()
        {
            *stored = label(&document, slot.requested.as_deref());
        }
        Ok(document)
    }
}

pub struct CodedRejections;

impl ExtensionFactory for CodedRejections {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CodedRejections)
    }
}

/// `error` with `extensions.code = BAD_USER_INPUT`, and `extensions.limit` when a limit
/// refused the query (async-graphql says which only in the message).
fn coded(mut error: ServerError) -> ServerError {
    let limit = match error.message.as_str() {
        "Query is nested too deep." => Some("depth"),
        "Query is too complex." => Some("complexity"),
        _ => None,
    };
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", "BAD_USER_INPUT");
    if let Some(limit) = limit {
        extensions.set("limit", limit);
    }
    error
}

#[async_trait::async_trait]
impl Extension for CodedRejections {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(coded)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx)
            .await
            .map_err(|errors| errors.into_iter().map(coded).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(query: &str, requested: Option<&str>) -> Option<String> {
        label(
            &async_graphql::parser::parse_query(query).unwrap(),
            requested,
        )
    }

    #[test]
    fn labels_name_the_type_and_root_fields() {
        assert_eq!(
            of("{ order(id: 1) { id } me { id } }", None).as_deref(),
            Some("graphql query me+order")
        );
        assert_eq!(
            of("mutation Pay { payOrder(id: 1) { id } }", None).as_deref(),
            Some("graphql mutation payOrder")
        );
        let two = "query A { me { id } } query B { users { edges { cursor } } }";
        assert_eq!(of(two, Some("B")).as_deref(), Some("graphql query users"));
        assert_eq!(
            of(
                "{ a: me { id } b: me { id } c: order { id } d: orders { id } e: users { id } }",
                None
            )
            .as_deref(),
            Some("graphql query me+order+orders+more")
        );
        assert_eq!(
            of("{ a { id } b { id } c { id } d { id } }", None).as_deref(),
            Some("graphql query a+b+c+more")
        );
    }
}
