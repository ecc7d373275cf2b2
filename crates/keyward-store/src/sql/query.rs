//! Statements assembled at run time: numbered parameters, `VALUES` lists, and keyset pagination.

use keyward_core::model::Tenancy;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Executor};

use crate::{Page, PageRequest, StoreResult};

/// Rows per multi-row INSERT of an import.
pub(super) const IMPORT_ROWS_PER_STATEMENT: usize = 100;
/// The same bound for the `last_used_at` and usage write-back batches.
pub(super) const BATCH_ROWS_PER_STATEMENT: usize = 100;

/// A value for a [`FilteredQuery`].
pub(super) enum Param {
    Text(String),
    OptionalText(Option<String>),
    Int(i64),
    OptionalInt(Option<i64>),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// SQL assembled from optional filters. sqlx's `QueryBuilder` writes the `Any` driver's `?`
/// placeholders, which PostgreSQL does not accept, so this numbers `$N` itself.
pub(super) struct FilteredQuery {
    sql: String,
    params: Vec<Param>,
}

impl FilteredQuery {
    pub(super) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(super) fn bind(&mut self, param: Param) -> &mut Self {
        self.params.push(param);
        self.sql.push_str(&format!("${}", self.params.len()));
        self
    }

    /// Appends `($1, $2), ($3, $4)…`: one tuple per row, for `VALUES` lists.
    pub(super) fn push_rows<Row: IntoIterator<Item = Param>>(
        &mut self,
        rows: impl IntoIterator<Item = Row>,
    ) -> &mut Self {
        for (index, row) in rows.into_iter().enumerate() {
            self.push(if index == 0 { "(" } else { ", (" });
            for (position, value) in row.into_iter().enumerate() {
                if position > 0 {
                    self.push(", ");
                }
                self.bind(value);
            }
            self.push(")");
        }
        self
    }

    pub(super) async fn fetch_all<'e, E>(self, executor: E) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        E: Executor<'e, Database = sqlx::Any>,
    {
        let mut query = sqlx::query(&self.sql);
        for param in self.params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::OptionalText(text) => query.bind(text),
                Param::Int(number) => query.bind(number),
                Param::OptionalInt(number) => query.bind(number),
                Param::Bool(flag) => query.bind(flag),
                Param::Bytes(bytes) => query.bind(bytes),
            };
        }
        query.fetch_all(executor).await
    }
}

/// `text` as a literal inside a `LIKE … ESCAPE '\'` pattern.
pub(super) fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// How a list pages: by keyset on one unique column, never by offset, so every page costs
/// what the first does and a row added meanwhile never shifts the next one. The cursor is
/// the last row's value of that column.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keyset {
    /// By id, newest first (ids sort by creation time); the first page starts above every
    /// id, which all sort below `~`.
    NewestFirst(&'static str),
    /// By a name, in order (rate-limit schemes by slug).
    Ascending(&'static str),
}

impl FilteredQuery {
    /// `{table}.workspace_id = $n AND {table}.environment = $m`: the rows of one environment.
    pub(super) fn in_environment(&mut self, table: &str, tenancy: &Tenancy) -> &mut Self {
        self.push(&format!("{table}.workspace_id = "))
            .bind(Param::Text(tenancy.workspace_id.clone()))
            .push(&format!(" AND {table}.environment = "))
            .bind(Param::Text(tenancy.environment.as_str().to_owned()))
    }

    /// Runs the query (a `SELECT … WHERE <conditions>`) for one page in `keyset`'s order:
    /// the rows past the cursor, one more than asked for so the page knows whether another
    /// follows.
    pub(super) async fn fetch_page<T>(
        mut self,
        pool: &AnyPool,
        keyset: Keyset,
        page: &PageRequest,
        from_row: impl Fn(&AnyRow) -> StoreResult<T>,
        cursor_of: impl Fn(&T) -> &str,
    ) -> StoreResult<Page<T>> {
        let (column, after, order) = match keyset {
            Keyset::NewestFirst(column) => (column, "<", "DESC"),
            Keyset::Ascending(column) => (column, ">", "ASC"),
        };
        let start = match (&page.cursor, keyset) {
            (Some(cursor), _) => cursor.clone(),
            (None, Keyset::NewestFirst(_)) => "~".to_owned(),
            (None, Keyset::Ascending(_)) => String::new(),
        };
        self.push(&format!(" AND {column} {after} "))
            .bind(Param::Text(start))
            .push(&format!(" ORDER BY {column} {order} LIMIT "))
            .bind(Param::Int(i64::from(page.limit) + 1));
        let rows = self.fetch_all(pool).await?;
        let mut items = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
        let limit = page.limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| cursor_of(last).to_owned())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
