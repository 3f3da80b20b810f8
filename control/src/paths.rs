//! Which changed paths a stack covers (DESIGN §5.1): its `project_root` by whole path components,
//! or its `additional_project_globs`.
//!
//! - `project_root` `""` covers the whole repository; `infra/app` covers `infra/app/main.tf` and
//!   `infra/app` itself, never `infra/app2/x.tf`. Roots are normalised when a stack is written
//!   ([`normalise_root`]): no leading or trailing `/`, no empty, `.` or `..` components.
//! - globs are relative to the repository root: `*` and `?` stay within one path segment, `**`
//!   spans segments (at the start, in the middle and at the end), `{a,b}` and `[ab]` as usual; a
//!   leading `!` excludes what earlier globs matched (a later positive glob can include it again).
//!   Matching is case-sensitive, like git; dot files are ordinary names.
//!
//! The same compiler validates globs at the API ([`compile_glob`]) and matches them in the router,
//! so a glob that was accepted always means what it meant then.

use globset::{GlobBuilder, GlobMatcher};

/// One compiled glob of a stack.
#[derive(Debug, Clone)]
struct Glob {
    exclude: bool,
    matcher: GlobMatcher,
}

/// Compiles `pattern` (with an optional leading `!`): whether it excludes, and its matcher; or
/// why it is not a glob.
fn compile(pattern: &str) -> Result<Glob, String> {
    let (exclude, body) = match pattern.strip_prefix('!') {
        Some(body) => (true, body),
        None => (false, pattern),
    };
    if body.is_empty() {
        return Err("a glob must not be empty".to_owned());
    }
    if body.starts_with('/') {
        return Err("globs are relative to the repository root: drop the leading `/`".to_owned());
    }
    let glob = GlobBuilder::new(body)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| err.kind().to_string())?;
    Ok(Glob {
        exclude,
        matcher: glob.compile_matcher(),
    })
}

/// Checks that `pattern` is a glob inlet can match; the error says why not.
pub fn compile_glob(pattern: &str) -> Result<(), String> {
    compile(pattern).map(|_| ())
}

/// `root` in its stored form, or why it cannot be one: no leading or trailing `/`, no empty, `.`
/// or `..` components; `""` (or `/`) is the whole repository. Whitespace is part of a name, as
/// in git, so the accepted set is exactly the pattern the OpenAPI document publishes.
pub fn normalise_root(root: &str) -> Result<String, String> {
    let trimmed = root.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let mut components = Vec::new();
    for component in trimmed.split('/') {
        match component {
            "" => return Err("must not contain `//`".to_owned()),
            "." | ".." => return Err("must not contain `.` or `..` components".to_owned()),
            c if c.contains('\\') => return Err("use `/` between directories".to_owned()),
            c => components.push(c),
        }
    }
    Ok(components.join("/"))
}

/// What one stack covers.
#[derive(Debug, Clone)]
pub struct PathFilter {
    root: String,
    globs: Vec<Glob>,
}

impl PathFilter {
    /// The filter of a stack with `project_root` (stored form) and `globs`. Globs that no longer
    /// compile (they were validated when written, so only a hand-written control record can hold
    /// one) are skipped with an error line.
    pub fn new(project_root: &str, globs: &[String]) -> PathFilter {
        let globs = globs
            .iter()
            .filter_map(|pattern| match compile(pattern) {
                Ok(glob) => Some(glob),
                Err(err) => {
                    tracing::error!(%pattern, error = %err, "skipping an invalid glob");
                    None
                }
            })
            .collect();
        PathFilter {
            root: project_root.trim_matches('/').to_owned(),
            globs,
        }
    }

    /// Whether the stack covers the whole repository, so no lookup of changed files can change
    /// its answer.
    pub fn covers_everything(&self) -> bool {
        self.root.is_empty()
    }

    /// Whether a change of `path` (repository-relative) affects the stack.
    pub fn covers(&self, path: &str) -> bool {
        self.under_root(path) || self.matches_globs(path)
    }

    fn under_root(&self, path: &str) -> bool {
        if self.root.is_empty() {
            return true;
        }
        match path.strip_prefix(self.root.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Globs in order: a positive glob includes what it matches, an excluding one removes it.
    fn matches_globs(&self, path: &str) -> bool {
        let mut matched = false;
        for glob in &self.globs {
            if glob.matcher.is_match(path) {
                matched = !glob.exclude;
            }
        }
        matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(root: &str, globs: &[&str]) -> PathFilter {
        let globs: Vec<String> = globs.iter().map(|g| (*g).to_owned()).collect();
        for glob in &globs {
            compile_glob(glob).unwrap_or_else(|err| panic!("{glob}: {err}"));
        }
        PathFilter::new(&normalise_root(root).expect("root"), &globs)
    }

    /// A root covers its own files by whole components, never a sibling with the same prefix.
    #[test]
    fn root_by_whole_components() {
        let f = filter("infra/app", &[]);
        assert!(f.covers("infra/app/main.tf"));
        assert!(f.covers("infra/app/modules/vpc/main.tf"));
        assert!(f.covers("infra/app"));
        assert!(!f.covers("infra/app2/x.tf"));
        assert!(!f.covers("infra/ap"));
        assert!(!f.covers("infra/main.tf"));
        assert!(!f.covers("other/infra/app/main.tf"));
        assert!(!f.covers("README.md"));
    }

    /// The empty root covers everything and needs no lookup.
    #[test]
    fn empty_root_covers_everything() {
        let f = filter("", &[]);
        assert!(f.covers_everything());
        assert!(f.covers("anything/at/all.tf"));
        assert!(f.covers(".github/workflows/ci.yml"));
        assert!(!filter("infra", &[]).covers_everything());
    }

    /// Roots are stored without leading or trailing slashes; `.`/`..`/`//` are refused.
    #[test]
    fn roots_are_normalised() {
        assert_eq!(normalise_root("/infra/app/").as_deref(), Ok("infra/app"));
        assert_eq!(normalise_root("infra/app").as_deref(), Ok("infra/app"));
        assert_eq!(normalise_root("/").as_deref(), Ok(""));
        assert_eq!(normalise_root("").as_deref(), Ok(""));
        assert!(normalise_root("infra/../secrets").is_err());
        assert!(normalise_root("./infra").is_err());
        assert!(normalise_root("infra//app").is_err());
        assert!(normalise_root("infra\\app").is_err());
        // A trailing slash in the request means the same root.
        assert!(filter("infra/app/", &[]).covers("infra/app/main.tf"));
        assert!(!filter("infra/app/", &[]).covers("infra/app2/main.tf"));
    }

    /// Matching is case-sensitive, as git paths are.
    #[test]
    fn case_sensitive() {
        assert!(!filter("Infra", &[]).covers("infra/main.tf"));
        assert!(!filter("infra", &["*.TF"]).covers("main.tf"));
        assert!(filter("infra", &["*.tf"]).covers("main.tf"));
    }

    /// `*` and `?` stay within one segment; `**` spans segments at the start, middle and end.
    #[test]
    fn glob_segments() {
        let star = filter("app", &["modules/*.tf"]);
        assert!(star.covers("modules/vpc.tf"));
        assert!(!star.covers("modules/vpc/main.tf"));
        let question = filter("app", &["env/?.tfvars"]);
        assert!(question.covers("env/a.tfvars"));
        assert!(!question.covers("env/ab.tfvars"));
        assert!(!question.covers("env//.tfvars"));
        let start = filter("app", &["**/versions.tf"]);
        assert!(start.covers("versions.tf"));
        assert!(start.covers("a/b/c/versions.tf"));
        let middle = filter("app", &["modules/**/main.tf"]);
        assert!(middle.covers("modules/main.tf"));
        assert!(middle.covers("modules/a/b/main.tf"));
        assert!(!middle.covers("other/modules/a/main.tf"));
        let end = filter("app", &["shared/**"]);
        assert!(end.covers("shared/x"));
        assert!(end.covers("shared/a/b/c.tf"));
        assert!(!end.covers("sharedx/a"));
    }

    /// Alternatives and classes.
    #[test]
    fn alternatives_and_classes() {
        let f = filter("app", &["{modules,shared}/*.tf", "env/[ps]rod.tfvars"]);
        assert!(f.covers("modules/a.tf"));
        assert!(f.covers("shared/b.tf"));
        assert!(!f.covers("other/c.tf"));
        assert!(f.covers("env/prod.tfvars"));
        assert!(f.covers("env/srod.tfvars"));
        assert!(!f.covers("env/trod.tfvars"));
    }

    /// A glob outside the root triggers the stack on its own.
    #[test]
    fn glob_outside_the_root() {
        let f = filter("infra/app", &["modules/**"]);
        assert!(f.covers("modules/vpc/main.tf"));
        assert!(f.covers("infra/app/main.tf"));
        assert!(!f.covers("infra/db/main.tf"));
    }

    /// `!` excludes what earlier globs matched; a later positive glob includes it again; it does
    /// not remove what the root covers.
    #[test]
    fn exclusion_in_order() {
        let f = filter(
            "app",
            &["modules/**", "!modules/**/*.md", "modules/keep.md"],
        );
        assert!(f.covers("modules/vpc/main.tf"));
        assert!(!f.covers("modules/vpc/README.md"));
        assert!(f.covers("modules/keep.md"));
        assert!(filter("app", &["!app/**"]).covers("app/main.tf"));
        assert!(!filter("x", &["!**/*.md"]).covers("a.md"));
    }

    /// Dot files are ordinary names.
    #[test]
    fn dot_files() {
        assert!(filter("app", &["*"]).covers(".terraform.lock.hcl"));
        assert!(filter("app", &[]).covers("app/.terraform.lock.hcl"));
        assert!(filter("app", &["**/.*"]).covers("a/.hidden"));
    }

    /// Bad globs are refused with a reason.
    #[test]
    fn bad_globs() {
        for glob in ["", "!", "[ab", "{a,b", "/abs/*.tf"] {
            assert!(compile_glob(glob).is_err(), "{glob}");
        }
        assert!(compile_glob("!**/*.md").is_ok());
    }
}
