//! Parsed GraphQL documents, remembered by query text.
//!
//! A client sends the same few query texts over and over; parsing one (async-graphql's
//! pest grammar) was 8 % of all CPU samples under `order(id)` load (docs/performance.md,
//! Fix 8). The document is only the query's syntax: validation against the schema, the
//! depth, complexity and directive limits, and execution still run for every request, with
//! its own variables. Only texts that parse are kept, and only short ones, in a bounded
//! cache, so odd or hostile queries cost a parse each, as before, and cannot grow it.

use std::sync::Arc;

use async_graphql::Request;
use async_graphql::parser::types::ExecutableDocument;
use quick_cache::sync::Cache;

/// Distinct query texts kept.
const CAPACITY: usize = 256;
/// Longer texts are parsed every time.
const MAX_QUERY_BYTES: usize = 2048;

pub struct ParsedQueries {
    documents: Cache<String, Arc<ExecutableDocument>>,
}

impl Default for ParsedQueries {
    fn default() -> Self {
        ParsedQueries {
            documents: Cache::new(CAPACITY),
        }
    }
}

impl ParsedQueries {
    /// Gives `request` its parsed document: the remembered one for its text, or one parsed
    /// now and remembered. A text that does not parse is left to the schema, which reports
    /// the syntax error as it always does.
    pub fn prepare(&self, request: &mut Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        if let Some(document) = self.documents.get(request.query.as_str()) {
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return;
        }
        if let Ok(document) = request.parsed_query() {
            let document = Arc::new(document.clone());
            self.documents.insert(request.query.clone(), document);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_parsed_once_and_a_bad_one_never_kept() {
        let parsed = ParsedQueries::default();
        let query = "query($id: ID!) { order(id: $id) { id } }";
        let mut first = Request::new(query);
        parsed.prepare(&mut first);
        assert_eq!(parsed.documents.len(), 1);
        let mut again = Request::new(query);
        parsed.prepare(&mut again);
        assert_eq!(parsed.documents.len(), 1);
        assert!(
            again
                .parsed_query()
                .is_ok_and(|d| d.operations.iter().count() == 1),
            "the remembered document is the request's"
        );

        let mut broken = Request::new("{ order(id: ");
        parsed.prepare(&mut broken);
        let mut long = Request::new(format!(
            "{{ me {{ id }} }} #{}",
            "x".repeat(MAX_QUERY_BYTES)
        ));
        parsed.prepare(&mut long);
        assert_eq!(
            parsed.documents.len(),
            1,
            "neither a syntax error nor a long text is kept"
        );
    }
}
