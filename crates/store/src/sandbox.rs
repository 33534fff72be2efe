//! What an analyst's statement may touch, decided from ClickHouse's own parse of it.
//!
//! An analyst's SQL never reaches the engine as written. The engine first parses it
//! from a string literal (`formatQuery`), which refuses anything that is not exactly
//! one statement and gives back its canonical text: no comments, no `$$` strings, no
//! unbalanced parentheses. The engine then reports the syntax tree of that text
//! (`EXPLAIN AST`), and [`check`] admits it only if every node, table and function in
//! it is on an allow-list. What runs is the canonical text, wrapped with a row cap, in
//! a session the engine itself holds to `readonly = 1` and fixed limits.
//!
//! Deny by default: a node kind, a table, or a table function that is not listed here
//! is refused, so a feature of a newer engine cannot slip through unnoticed.

use serde::Deserialize;

/// `system` tables analysts may read: constants and catalogues of the engine's own
/// functions and types, and the names of tables and columns (the schema analysts
/// query). Nothing about other users, queries, settings or the host.
pub const SYSTEM_TABLES: &[&str] = &[
    "one",
    "numbers",
    "functions",
    "data_type_families",
    "time_zones",
    "tables",
    "columns",
];

/// Scalar functions that reach outside the tables (files, dictionaries, the host, the
/// server's settings and identity) or stall the engine. Compared case-insensitively.
const DENIED_FUNCTIONS: &[&str] = &[
    "file",
    "joinget",
    "joingetornull",
    "getsetting",
    "getsettingordefault",
    "getserversetting",
    "getmergetreesetting",
    "getmacro",
    "getclienthttpheader",
    "getserverport",
    "tcpport",
    "currentuser",
    "current_user",
    "user",
    "currentprofiles",
    "enabledprofiles",
    "defaultprofiles",
    "currentroles",
    "enabledroles",
    "defaultroles",
    "hostname",
    "fqdn",
    "displayname",
    "serveruuid",
    "getoskernelversion",
    "filesystemavailable",
    "filesystemcapacity",
    "filesystemunreserved",
    "catboostevaluate",
    "modelevaluate",
    "showcertificate",
    "addresstoline",
    "addresstolinewithinlines",
    "addresstosymbol",
    "demangle",
    "globalvariable",
    "hascolumnintable",
    "zookeepersessionuptime",
    "buildid",
    "uptime",
    "queryid",
    "initialqueryid",
    "initialquerystarttime",
    "input",
];

/// Function-name prefixes denied as a family: every dictionary function reads a
/// dictionary, which may be backed by a file, a URL or another server.
const DENIED_FUNCTION_PREFIXES: &[&str] = &["dict", "__"];

/// Functions whose second argument may name a table (`x IN db.table`).
const SET_FUNCTIONS: &[&str] = &[
    "in",
    "notIn",
    "globalIn",
    "globalNotIn",
    "nullIn",
    "notNullIn",
    "globalNullIn",
    "globalNotNullIn",
];

/// Node kinds of `EXPLAIN AST` that a read-only SELECT is made of. Anything else
/// (a `Set` for SETTINGS, an EXPLAIN, a query parameter, a node kind added by a later
/// engine) is refused.
const ALLOWED_NODES: &[&str] = &[
    "SelectWithUnionQuery",
    "SelectIntersectExceptQuery",
    "SelectQuery",
    "ExpressionList",
    "TablesInSelectQuery",
    "TablesInSelectQueryElement",
    "TableExpression",
    "TableIdentifier",
    "TableJoin",
    "ArrayJoin",
    "Subquery",
    "WithElement",
    "Identifier",
    "Function",
    "Literal",
    "Asterisk",
    "QualifiedAsterisk",
    "ColumnsRegexpMatcher",
    "ColumnsListMatcher",
    "QualifiedColumnsRegexpMatcher",
    "QualifiedColumnsListMatcher",
    "ColumnsTransformerList",
    "ColumnsApplyTransformer",
    "ColumnsExceptTransformer",
    "ColumnsReplaceTransformer",
    "ColumnsReplaceTransformer::Replacement",
    "OrderByElement",
    "InterpolateElement",
    "WindowDefinition",
    "WindowListElement",
    "SampleRatio",
];

/// One node of the engine's syntax tree, as `EXPLAIN AST` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AstNode {
    /// `SelectQuery`, `TableIdentifier`, `Function`, ...
    pub kind: String,
    /// The rest of the line without alias and child count: a function's or table's
    /// name, a literal's value.
    pub name: String,
    pub children: Vec<AstNode>,
}

/// An analyst's statement as the engine parsed it. Only a store makes one (from the
/// engine's answers); the canonical text is what runs.
#[derive(Clone, Debug)]
pub struct ParsedSelect {
    canonical: String,
    root: AstNode,
}

impl ParsedSelect {
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    pub fn root(&self) -> &AstNode {
        &self.root
    }
}

/// Why a parsed statement may not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The statement that asks the engine to parse `sql` without running it: the text is
/// passed as a string literal, so nothing in it can act as SQL here.
pub fn format_query(sql: &str) -> String {
    let mut lit = String::with_capacity(sql.len() + 32);
    lit.push_str("SELECT formatQuery('");
    for c in sql.chars() {
        match c {
            '\\' => lit.push_str("\\\\"),
            '\'' => lit.push_str("\\'"),
            c => lit.push(c),
        }
    }
    lit.push_str("') AS q");
    lit
}

/// Reads the answer of [`format_query`] in `JSONEachRow`.
pub fn read_formatted(out: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Row {
        q: String,
    }
    let text = std::str::from_utf8(out).map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or("no answer")?;
    let row: Row = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(row.q)
}

/// The statement that asks for the syntax tree of a canonical (single) statement.
pub fn explain_ast(canonical: &str) -> String {
    format!("EXPLAIN AST {canonical}")
}

/// Builds the tree from `EXPLAIN AST`'s answer in `JSONEachRow` (one `{"explain": …}`
/// per line; a node's depth is its count of leading spaces).
pub fn read_ast(canonical: String, out: &[u8]) -> Result<ParsedSelect, String> {
    #[derive(Deserialize)]
    struct Row {
        explain: String,
    }
    let text = std::str::from_utf8(out).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(l).map_err(|e| e.to_string())?;
        lines.push(row.explain);
    }
    let root = build_tree(&lines)?;
    Ok(ParsedSelect { canonical, root })
}

fn build_tree(lines: &[String]) -> Result<AstNode, String> {
    // (depth, node) of the open path from the root to the last node read.
    let mut stack: Vec<(usize, AstNode)> = Vec::new();
    let mut root = None;
    for line in lines {
        let depth = line.len() - line.trim_start_matches(' ').len();
        let node = parse_line(line.trim_start_matches(' '));
        while let Some((d, _)) = stack.last() {
            if *d < depth {
                break;
            }
            let (_, done) = stack.pop().expect("checked above");
            attach(&mut stack, &mut root, done)?;
        }
        if stack.last().is_some_and(|(d, _)| *d + 1 != depth) || (stack.is_empty() && depth != 0) {
            return Err(format!("unexpected indentation at `{line}`"));
        }
        stack.push((depth, node));
    }
    while let Some((_, done)) = stack.pop() {
        attach(&mut stack, &mut root, done)?;
    }
    root.ok_or_else(|| "empty syntax tree".to_string())
}

fn attach(
    stack: &mut [(usize, AstNode)],
    root: &mut Option<AstNode>,
    node: AstNode,
) -> Result<(), String> {
    match stack.last_mut() {
        Some((_, parent)) => parent.children.push(node),
        None if root.is_none() => *root = Some(node),
        None => return Err("more than one statement in the syntax tree".into()),
    }
    Ok(())
}

fn parse_line(line: &str) -> AstNode {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut name = rest;
    if let Some(i) = name.rfind(" (children ") {
        if name.ends_with(')') {
            name = &name[..i];
        }
    } else if let Some(r) = name.strip_prefix("(children ")
        && r.ends_with(')')
    {
        name = "";
    }
    if let Some(i) = name.find(" (alias ") {
        name = &name[..i];
    }
    AstNode {
        kind: kind.to_string(),
        name: name.to_string(),
        children: Vec::new(),
    }
}

/// Admits a parsed statement if it is one read-only SELECT over the tables of
/// `database` (and a few `system` catalogues), with no table function, no SETTINGS,
/// no FORMAT or INTO OUTFILE, and no function that reaches outside the tables.
pub fn check(parsed: &ParsedSelect, database: &str) -> Result<(), Refusal> {
    let root = &parsed.root;
    if root.kind != "SelectWithUnionQuery" {
        return Err(Refusal(format!(
            "only SELECT statements may run here, not {}",
            statement_word(&root.kind)
        )));
    }
    // A SELECT's root holds its list of selects; a second child is FORMAT, INTO
    // OUTFILE or SETTINGS of the whole statement.
    if root.children.len() != 1 {
        return Err(Refusal(
            "FORMAT, INTO OUTFILE and SETTINGS clauses are not allowed: answers are JSON, \
             limits are fixed"
                .into(),
        ));
    }
    walk(root, None, database)
}

fn statement_word(kind: &str) -> String {
    kind.trim_end_matches("Query").to_ascii_uppercase()
}

fn walk(node: &AstNode, parent: Option<&AstNode>, database: &str) -> Result<(), Refusal> {
    if node.kind == "Set" {
        return Err(Refusal(
            "SETTINGS clauses are not allowed: analysts' queries run with fixed limits".into(),
        ));
    }
    if !ALLOWED_NODES.contains(&node.kind.as_str()) {
        return Err(Refusal(format!(
            "`{}` is not allowed in analysts' queries",
            node.kind
        )));
    }
    match node.kind.as_str() {
        "TableIdentifier" => check_table(&node.name, database)?,
        "Function" if parent.is_some_and(|p| p.kind == "TableExpression") => {
            return Err(Refusal(format!(
                "table functions are not allowed (`{}`): analysts read the tables of `{database}`",
                node.name
            )));
        }
        "Function" => {
            check_function(&node.name)?;
            if SET_FUNCTIONS.contains(&node.name.as_str())
                && let Some(args) = node.children.first()
                && let Some(rhs) = args.children.get(1)
                && rhs.kind == "Identifier"
            {
                // `x IN name` reads the table `name` (or a CTE of that name).
                check_table(&rhs.name, database)?;
            }
        }
        _ => {}
    }
    for c in &node.children {
        walk(c, Some(node), database)?;
    }
    Ok(())
}

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Table names as `EXPLAIN AST` prints them (unquoted, `db.table`). A bare name is a
/// table of the session's current database — which is `database` for analysts — or
/// a CTE; anything that does not read as exactly one of the allowed shapes is refused.
fn check_table(name: &str, database: &str) -> Result<(), Refusal> {
    if is_plain_identifier(name) {
        return Ok(());
    }
    if let Some((db, table)) = name.split_once('.')
        && is_plain_identifier(table)
    {
        if db == database {
            return Ok(());
        }
        if db == "system" && SYSTEM_TABLES.contains(&table) {
            return Ok(());
        }
    }
    Err(Refusal(format!(
        "table `{name}` is outside what analysts may read: the tables of `{database}` and \
         system.{{{}}}",
        SYSTEM_TABLES.join(",")
    )))
}

fn check_function(name: &str) -> Result<(), Refusal> {
    let lower = name.to_ascii_lowercase();
    if DENIED_FUNCTIONS.contains(&lower.as_str())
        || DENIED_FUNCTION_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
    {
        return Err(Refusal(format!(
            "function `{name}` is not allowed in analysts' queries: it reads outside the tables"
        )));
    }
    Ok(())
}

/// Wraps the canonical text with a row cap (one extra row tells that the result was
/// cut). The canonical text is the engine's own rendering of one SELECT, so its
/// parentheses balance and it carries no FORMAT or trailing clause that could escape.
pub fn wrapped(parsed: &ParsedSelect, max_rows: u64) -> String {
    format!(
        "SELECT * FROM (\n{}\n) LIMIT {}",
        parsed.canonical,
        max_rows + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(lines: &[&str]) -> ParsedSelect {
        let out: String = lines
            .iter()
            .map(|l| serde_json::json!({ "explain": l }).to_string() + "\n")
            .collect();
        read_ast("SELECT 1".into(), out.as_bytes()).unwrap()
    }

    #[test]
    fn the_literal_of_format_query_cannot_be_escaped() {
        assert_eq!(
            format_query(r"SELECT 'a\'') --"),
            r"SELECT formatQuery('SELECT \'a\\\'\') --') AS q"
        );
    }

    #[test]
    fn the_tree_is_read_with_names_aliases_and_children() {
        let p = tree(&[
            "SelectWithUnionQuery (children 1)",
            " ExpressionList (children 1)",
            "  SelectQuery (children 2)",
            "   ExpressionList (children 1)",
            "    Function count (children 1)",
            "     ExpressionList",
            "   TablesInSelectQuery (children 1)",
            "    TablesInSelectQueryElement (children 1)",
            "     TableExpression (children 1)",
            "      TableIdentifier ugc.events (alias e)",
        ]);
        let select = &p.root().children[0].children[0];
        assert_eq!(select.kind, "SelectQuery");
        assert_eq!(select.children[0].children[0].name, "count");
        let table = &select.children[1].children[0].children[0].children[0];
        assert_eq!(
            (table.kind.as_str(), table.name.as_str()),
            ("TableIdentifier", "ugc.events")
        );
        assert!(check(&p, "ugc").is_ok());
    }

    #[test]
    fn tables_outside_the_database_functions_and_settings_are_refused() {
        let with_table = |t: &str| {
            tree(&[
                "SelectWithUnionQuery (children 1)",
                " ExpressionList (children 1)",
                "  SelectQuery (children 2)",
                "   ExpressionList (children 1)",
                "    Asterisk",
                "   TablesInSelectQuery (children 1)",
                "    TablesInSelectQueryElement (children 1)",
                "     TableExpression (children 1)",
                &format!("      {t}"),
            ])
        };
        assert!(check(&with_table("TableIdentifier events"), "ugc").is_ok());
        assert!(check(&with_table("TableIdentifier system.one"), "ugc").is_ok());
        for t in [
            "TableIdentifier system.users",
            "TableIdentifier /etc/passwd",
            "TableIdentifier default.x",
            "TableIdentifier ugc.a.b",
            "TableIdentifier ugc.ev ents",
            "Function file (children 1)",
            "Function numbers (children 1)",
        ] {
            assert!(check(&with_table(t), "ugc").is_err(), "{t}");
        }
        let set = tree(&[
            "SelectWithUnionQuery (children 1)",
            " ExpressionList (children 1)",
            "  SelectQuery (children 2)",
            "   ExpressionList (children 1)",
            "    Function dictGetString (children 1)",
            "   Set",
        ]);
        assert!(check(&set, "ugc").unwrap_err().0.contains("dictGetString"));
        let outfile = tree(&[
            "SelectWithUnionQuery (children 2)",
            " ExpressionList (children 1)",
            "  SelectQuery (children 1)",
            "   ExpressionList (children 1)",
            "    Literal UInt64_1",
            " Literal '/tmp/x'",
        ]);
        assert!(check(&outfile, "ugc").is_err());
    }
}
