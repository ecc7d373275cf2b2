//! Permission names and the query a verification asks of a key, such as
//! `read:data AND (write:data OR admin)`.

use std::fmt;

pub const MAX_PERMISSION_LEN: usize = 128;
pub const MAX_QUERY_LEN: usize = 4096;
/// Bounds recursion, so a hostile query cannot exhaust the stack.
pub const MAX_QUERY_DEPTH: usize = 32;

// Errors name what was wrong and where, never the text itself: a secret pasted into the
// wrong field is often a valid permission name (`acme_live_…`), and messages go back to
// the caller and into logs.

/// A permission name: 1 to 128 of `A-Z a-z 0-9 _ : . - /`, and not a query keyword.
pub fn is_valid_permission(name: &str) -> bool {
    (1..=MAX_PERMISSION_LEN).contains(&name.len())
        && name.bytes().all(is_permission_byte)
        && !name.eq_ignore_ascii_case("and")
        && !name.eq_ignore_ascii_case("or")
}

const fn is_permission_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b':' | b'.' | b'-' | b'/')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the permission query is empty")]
    Empty,
    #[error("the permission query is longer than {MAX_QUERY_LEN} characters")]
    TooLong,
    #[error("the permission query nests deeper than {MAX_QUERY_DEPTH} levels")]
    TooDeep,
    #[error("unexpected character {0:?} in the permission query")]
    UnexpectedCharacter(char),
    #[error("the permission query is incomplete or has an unmatched parenthesis")]
    Incomplete,
    #[error("unexpected {0} in the permission query")]
    UnexpectedToken(&'static str),
    #[error("a permission name in the query is longer than {MAX_PERMISSION_LEN} characters")]
    PermissionTooLong,
    #[error(
        "item {0} of the permission list is not a valid permission name (1 to \
         {MAX_PERMISSION_LEN} of A-Z a-z 0-9 _ : . - /)"
    )]
    InvalidPermission(usize),
}

/// A parsed permission query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionQuery {
    Has(String),
    And(Vec<PermissionQuery>),
    Or(Vec<PermissionQuery>),
}

impl PermissionQuery {
    /// Every one of `names` is required.
    pub fn all_of(names: &[String]) -> Result<Self, QueryError> {
        if names.is_empty() {
            return Err(QueryError::Empty);
        }
        let terms = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                if is_valid_permission(name) {
                    Ok(Self::Has(name.clone()))
                } else {
                    Err(QueryError::InvalidPermission(index))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::And(terms))
    }

    pub fn parse(text: &str) -> Result<Self, QueryError> {
        if text.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong);
        }
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(QueryError::Empty);
        }
        let mut parser = Parser {
            tokens,
            position: 0,
        };
        let query = parser.or_expression(0)?;
        match parser.tokens.get(parser.position) {
            None => Ok(query),
            Some(token) => Err(QueryError::UnexpectedToken(token.describe())),
        }
    }

    /// Whether a key holding `granted` satisfies the query.
    pub fn is_satisfied_by(&self, granted: &[String]) -> bool {
        match self {
            Self::Has(name) => granted.iter().any(|held| held == name),
            Self::And(terms) => terms.iter().all(|term| term.is_satisfied_by(granted)),
            Self::Or(terms) => terms.iter().any(|term| term.is_satisfied_by(granted)),
        }
    }
}

impl fmt::Display for PermissionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (terms, joiner) = match self {
            Self::Has(name) => return f.write_str(name),
            Self::And(terms) => (terms, " AND "),
            Self::Or(terms) => (terms, " OR "),
        };
        f.write_str("(")?;
        for (index, term) in terms.iter().enumerate() {
            if index > 0 {
                f.write_str(joiner)?;
            }
            write!(f, "{term}")?;
        }
        f.write_str(")")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    And,
    Or,
    Open,
    Close,
}

impl Token {
    /// What kind of token it is, for an error message; never a name's text.
    const fn describe(&self) -> &'static str {
        match self {
            Token::Name(_) => "permission name",
            Token::And => "AND",
            Token::Or => "OR",
            Token::Open => "'('",
            Token::Close => "')'",
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            c if c.is_ascii() && is_permission_byte(c as u8) => {
                let mut end = start + 1;
                while let Some(&(index, next)) = chars.peek() {
                    if next.is_ascii() && is_permission_byte(next as u8) {
                        end = index + 1;
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &text[start..end];
                tokens.push(if word.eq_ignore_ascii_case("and") {
                    Token::And
                } else if word.eq_ignore_ascii_case("or") {
                    Token::Or
                } else if word.len() > MAX_PERMISSION_LEN {
                    return Err(QueryError::PermissionTooLong);
                } else {
                    Token::Name(word.to_owned())
                });
            }
            other => return Err(QueryError::UnexpectedCharacter(other)),
        }
    }
    Ok(tokens)
}

/// Recursive descent: `or := and (OR and)*`, `and := atom (AND atom)*`, `atom := name | ( or )`.
/// AND binds tighter than OR, as in SQL.
struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn or_expression(&mut self, depth: usize) -> Result<PermissionQuery, QueryError> {
        let mut terms = vec![self.and_expression(depth)?];
        while self.peek() == Some(&Token::Or) {
            self.position += 1;
            terms.push(self.and_expression(depth)?);
        }
        Ok(collapse(terms, PermissionQuery::Or))
    }

    fn and_expression(&mut self, depth: usize) -> Result<PermissionQuery, QueryError> {
        let mut terms = vec![self.atom(depth)?];
        while self.peek() == Some(&Token::And) {
            self.position += 1;
            terms.push(self.atom(depth)?);
        }
        Ok(collapse(terms, PermissionQuery::And))
    }

    fn atom(&mut self, depth: usize) -> Result<PermissionQuery, QueryError> {
        match self.next() {
            Some(Token::Name(name)) => Ok(PermissionQuery::Has(name)),
            Some(Token::Open) => {
                if depth >= MAX_QUERY_DEPTH {
                    return Err(QueryError::TooDeep);
                }
                let inner = self.or_expression(depth + 1)?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    Some(other) => Err(QueryError::UnexpectedToken(other.describe())),
                    None => Err(QueryError::Incomplete),
                }
            }
            Some(other) => Err(QueryError::UnexpectedToken(other.describe())),
            None => Err(QueryError::Incomplete),
        }
    }
}

fn collapse(
    mut terms: Vec<PermissionQuery>,
    combine: fn(Vec<PermissionQuery>) -> PermissionQuery,
) -> PermissionQuery {
    if terms.len() == 1 {
        terms.remove(0)
    } else {
        combine(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn granted(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let query = PermissionQuery::parse("a OR b AND c").unwrap();
        assert!(query.is_satisfied_by(&granted(&["a"])));
        assert!(!query.is_satisfied_by(&granted(&["b"])));
        assert!(query.is_satisfied_by(&granted(&["b", "c"])));
    }

    #[test]
    fn the_spec_example_evaluates_as_written() {
        let query = PermissionQuery::parse("read:data AND (write:data OR admin)").unwrap();
        assert!(query.is_satisfied_by(&granted(&["read:data", "admin"])));
        assert!(query.is_satisfied_by(&granted(&["read:data", "write:data"])));
        assert!(!query.is_satisfied_by(&granted(&["read:data"])));
        assert!(!query.is_satisfied_by(&granted(&["admin", "write:data"])));
        assert_eq!(query.to_string(), "(read:data AND (write:data OR admin))");
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        assert_eq!(PermissionQuery::parse("  "), Err(QueryError::Empty));
        assert_eq!(PermissionQuery::parse("(a"), Err(QueryError::Incomplete));
        assert_eq!(PermissionQuery::parse("a AND"), Err(QueryError::Incomplete));
        assert_eq!(
            PermissionQuery::parse("a b"),
            Err(QueryError::UnexpectedToken("permission name"))
        );
        assert!(matches!(
            PermissionQuery::parse("a)"),
            Err(QueryError::UnexpectedToken(_))
        ));
        assert_eq!(
            PermissionQuery::parse("a & b"),
            Err(QueryError::UnexpectedCharacter('&'))
        );
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(PermissionQuery::parse(&deep), Err(QueryError::TooDeep));
        assert_eq!(
            PermissionQuery::parse(&"a ".repeat(3000)),
            Err(QueryError::TooLong)
        );
    }

    #[test]
    fn errors_never_quote_the_query() {
        let secret = "acme_live_AbCdEfGhIjKlMnOpQrStUvWx123456";
        for query in [
            format!("a {secret}"),
            format!("{secret} {secret}"),
            format!("({secret}"),
            format!("{secret})"),
            format!("{secret}{}", "x".repeat(200)),
        ] {
            let error = PermissionQuery::parse(&query).unwrap_err().to_string();
            assert!(!error.contains("acme_live"), "{error}");
        }
        let error = PermissionQuery::all_of(&["ok".to_owned(), format!("{secret} x")]).unwrap_err();
        assert_eq!(error, QueryError::InvalidPermission(1));
    }

    #[test]
    fn permission_names_are_validated() {
        assert!(is_valid_permission("read:data"));
        assert!(is_valid_permission("api/v1.read-all_x"));
        assert!(!is_valid_permission(""));
        assert!(!is_valid_permission("AND"));
        assert!(!is_valid_permission("has space"));
        assert!(!is_valid_permission(&"a".repeat(129)));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = PermissionQuery::parse(&text);
        }

        #[test]
        fn parsing_arbitrary_query_shapes_never_panics(text in "[ab() ]{0,60}|(AND|OR|\\(|\\)| |x){0,60}") {
            let _ = PermissionQuery::parse(&text);
        }
    }
}
