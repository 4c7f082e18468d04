//! From a parsed [`Config`] to the targets one invocation builds (buildx
//! `ReadTargets`): requested names and globs, groups walked, `inherits`
//! merged (parents in order, later wins), `--set` overrides, normalisation,
//! defaults for `context`/`dockerfile`, and targets reached through
//! `target:NAME` contexts added.

use std::collections::BTreeMap;

use super::error::BakeError;
use super::parse::Config;
use super::target::{Group, LIST_OVERRIDE_KEYS, Override, Target};

/// The resolved definition.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Targets by name.
    pub targets: BTreeMap<String, Target>,
    /// Groups walked, plus `default`.
    pub groups: BTreeMap<String, Group>,
    /// Paths the overrides read (for entitlement checks).
    pub fs_read: Vec<String>,
}

/// Go's `path.Match` (`*`, `?`, `[...]`, `\` escapes; `*` does not cross `/`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| !n[..i].contains(&'/') && go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && n[0] != '/' && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else { return false };
                if n.is_empty() {
                    return false;
                }
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some('^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= n[0] && n[0] <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == n[0];
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && go(&p[2..], &n[1..]),
            Some(c) => !n.is_empty() && n[0] == *c && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', ']'])
}

impl Config {
    /// Expands a requested name or glob over groups and targets.
    pub fn match_names(&self, pattern: &str) -> Result<Vec<String>, BakeError> {
        if !is_glob(pattern) {
            return Ok(vec![pattern.to_string()]);
        }
        let mut names: Vec<String> =
            self.groups.iter().filter(|g| glob_match(pattern, &g.name)).map(|g| g.name.clone()).collect();
        names.extend(self.targets.iter().filter(|t| glob_match(pattern, &t.name)).map(|t| t.name.clone()));
        if names.is_empty() {
            return Err(BakeError::NoMatch(pattern.to_string()));
        }
        Ok(names)
    }

    fn expand_targets(&self, pattern: &str) -> Result<Vec<String>, BakeError> {
        if self.targets.iter().any(|t| t.name == pattern) {
            return Ok(vec![pattern.to_string()]);
        }
        let names: Vec<String> =
            self.targets.iter().filter(|t| glob_match(pattern, &t.name)).map(|t| t.name.clone()).collect();
        if names.is_empty() {
            return Err(BakeError::NoMatch(pattern.to_string()));
        }
        Ok(names)
    }

    /// Parses `--set` strings into per-target overrides (buildx `newOverrides`).
    pub fn overrides(
        &self,
        sets: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, BTreeMap<String, Override>>, BakeError> {
        let mut m: BTreeMap<String, BTreeMap<String, Override>> = BTreeMap::new();
        for s in sets {
            let (lhs, value) = match s.split_once('=') {
                Some((a, b)) => (a, Some(b)),
                None => (s.as_str(), None),
            };
            let append = lhs.ends_with('+');
            let skey = lhs.trim_end_matches('+');
            let keys: Vec<&str> = skey.splitn(3, '.').collect();
            if keys.len() < 2 {
                return Err(BakeError::OverrideSyntax(format!("key {skey}, expected target.name")));
            }
            if value.is_none() && keys[1] != "args" {
                return Err(BakeError::OverrideSyntax(format!("{s}, expected target.name=value")));
            }
            let names = self.expand_targets(keys[0])?;
            let okey = keys[1..].join(".");
            for name in names {
                let t = m.entry(name).or_default();
                let mut o = t.get(&okey).cloned().unwrap_or_default();
                let k1 = keys[1];
                if LIST_OVERRIDE_KEYS.contains(&k1) {
                    if let Some(v) = value {
                        o.append = append;
                        o.values.push(v.to_string());
                    }
                } else if k1 == "resources" || k1 == "secret" {
                    if keys.len() != 3 {
                        return Err(BakeError::OverrideSyntax(format!("key {lhs}, {k1} requires name")));
                    }
                    if append {
                        return Err(BakeError::OverrideSyntax(format!("key {lhs}, {k1} does not support append")));
                    }
                    o.value = value.unwrap_or_default().to_string();
                } else {
                    if (k1 == "args" || k1 == "contexts") && keys.len() != 3 {
                        return Err(BakeError::OverrideSyntax(format!("key {lhs}, {k1} requires name")));
                    }
                    match value {
                        Some(v) => o.value = v.to_string(),
                        None => match env.get(keys[2]) {
                            Some(v) => o.value = v.clone(),
                            None => continue,
                        },
                    }
                }
                t.insert(okey.clone(), o);
            }
        }
        Ok(m)
    }

    /// The targets and groups reached from `name` (buildx `ResolveGroup`).
    pub fn resolve_group(&self, name: &str) -> (Vec<String>, Vec<String>) {
        let mut visited = BTreeMap::new();
        let (t, g) = self.walk_group(name, &mut visited);
        (super::entries::dedup(t), super::entries::dedup(g))
    }

    fn walk_group(
        &self,
        name: &str,
        visited: &mut BTreeMap<String, (Vec<String>, Vec<String>)>,
    ) -> (Vec<String>, Vec<String>) {
        if let Some(v) = visited.get(name) {
            return v.clone();
        }
        let Some(g) = self.group(name) else { return (vec![name.to_string()], Vec::new()) };
        visited.insert(name.to_string(), (Vec::new(), Vec::new()));
        let mut targets = Vec::new();
        let mut groups = vec![name.to_string()];
        for t in &g.targets {
            let (tt, tg) = self.walk_group(t, visited);
            if tt.is_empty() {
                targets.push(t.clone());
            } else {
                targets.extend(tt);
            }
            groups.extend(tg);
        }
        visited.insert(name.to_string(), (targets.clone(), groups.clone()));
        (targets, groups)
    }

    /// One target with `inherits` merged, overrides applied, normalised and
    /// defaulted (buildx `ResolveTarget`).
    pub fn resolve_target(
        &self,
        name: &str,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
        fs_read: &mut Vec<String>,
    ) -> Result<Target, BakeError> {
        let mut stack = Vec::new();
        let mut done = BTreeMap::new();
        let mut t = self.inherit(name, &mut stack, &mut done, overrides, fs_read)?;
        t.inherits.clear();
        if t.context.is_none() {
            // Under file-relative paths the default context is the file's directory.
            t.context = Some(match (&t.default_context_base, t.rebased) {
                (Some(base), true) => rebase_path(base, "."),
                _ => ".".to_string(),
            });
        }
        if t.dockerfile.as_deref().is_none_or(str::is_empty) {
            t.dockerfile = Some("Dockerfile".into());
        }
        Ok(t)
    }

    fn inherit(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeMap<String, Target>,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
        fs_read: &mut Vec<String>,
    ) -> Result<Target, BakeError> {
        if let Some(t) = done.get(name) {
            return Ok(t.clone());
        }
        if stack.iter().any(|s| s == name) {
            let mut cycle = stack.clone();
            cycle.push(name.to_string());
            return Err(BakeError::InheritsCycle(cycle));
        }
        let own = self.target(name).ok_or_else(|| BakeError::UnknownTarget(name.to_string()))?.clone();
        stack.push(name.to_string());
        let mut merged = Target::default();
        for parent in &own.inherits {
            let p = self.inherit(parent, stack, done, overrides, fs_read).map_err(|e| match e {
                // Point at the `inherits` that names the missing or cyclic target.
                BakeError::UnknownTarget(_) | BakeError::InheritsCycle(_) => {
                    self.locate(own.locs.get("inherits").copied(), e)
                }
                other => other,
            })?;
            merged.merge(&p);
        }
        stack.pop();
        merged.merge(&own);
        merged.name = name.to_string();
        if let Some(o) = overrides.get(name) {
            merged.add_overrides(o, fs_read).map_err(|source| BakeError::Field { target: name.to_string(), source })?;
        }
        merged.normalize();
        done.insert(name.to_string(), merged.clone());
        Ok(merged)
    }

    /// Adds targets reached through `target:` contexts (buildx `loadLinks`).
    fn load_links(
        &self,
        name: &str,
        targets: &mut BTreeMap<String, Target>,
        overrides: &BTreeMap<String, BTreeMap<String, Override>>,
        visited: &mut Vec<String>,
        fs_read: &mut Vec<String>,
    ) -> Result<(), BakeError> {
        visited.push(name.to_string());
        let links: Vec<String> = targets[name]
            .contexts
            .iter()
            .flatten()
            .filter_map(|(_, v)| v.strip_prefix("target:").map(str::to_string))
            .collect();
        let at = targets[name].locs.get("contexts").copied();
        for link in links {
            if link == name {
                return Err(self.locate(at, BakeError::LinkSelf(link)));
            }
            if visited.contains(&link) {
                return Err(self.locate(at, BakeError::LinkLoop { from: name.to_string(), to: link }));
            }
            if !targets.contains_key(&link) {
                let mut t2 = self.resolve_target(&link, overrides, fs_read).map_err(|e| match e {
                    BakeError::UnknownTarget(_) => self.locate(at, e),
                    other => other,
                })?;
                t2.output = Some(vec![super::entries::Export { kind: "cacheonly".into(), ..Default::default() }]);
                t2.linked = true;
                targets.insert(link.clone(), t2);
            }
            self.load_links(&link, targets, overrides, &mut visited.clone(), fs_read)?;
            let linked_ents = targets[&link].entitlements.clone().unwrap_or_default();
            let t = targets.get_mut(name).expect("present");
            for e in linked_ents {
                let ents = t.entitlements.get_or_insert_with(Vec::new);
                if !ents.contains(&e) {
                    ents.push(e);
                }
            }
            let (tp, lp) = (
                targets[name].platforms.clone().unwrap_or_default(),
                targets[&link].platforms.clone().unwrap_or_default(),
            );
            if tp.len() > 1 && lp.len() > 1 && !tp.iter().all(|p| lp.contains(p)) {
                return Err(BakeError::LinkPlatforms {
                    target: link,
                    by: name.to_string(),
                    by_platforms: tp,
                    platforms: lp,
                });
            }
        }
        Ok(())
    }
}

/// Resolves the requested names (buildx `ReadTargets`).
pub fn read_targets(
    config: &Config,
    requested: &[String],
    sets: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Resolved, BakeError> {
    let mut names = Vec::new();
    for r in requested {
        let r = r.replace('.', "_");
        names.extend(config.match_names(&r)?);
    }
    let names = super::entries::dedup(names);
    let overrides = config.overrides(sets, env)?;
    let mut out = Resolved::default();
    for n in &names {
        let (ts, gs) = config.resolve_group(n);
        for t in ts {
            let target = config.resolve_target(&t, &overrides, &mut out.fs_read).map_err(|e| match e {
                // A group names a target that does not exist: point at the group.
                BakeError::UnknownTarget(ref missing) if missing == &t => {
                    let group = config.groups.iter().find(|g| g.targets.contains(&t));
                    config.locate(group.and_then(|g| g.loc), e)
                }
                other => other,
            })?;
            out.targets.insert(t, target);
        }
        for g in gs {
            if let Some(group) = config.group(&g) {
                out.groups.insert(g.clone(), group.clone());
            }
        }
    }
    let had_default = out.groups.contains_key("default");
    for n in &names {
        if had_default && n == "default" {
            continue;
        }
        out.groups
            .entry("default".into())
            .or_insert_with(|| Group { name: "default".into(), ..Default::default() })
            .targets
            .push(n.clone());
    }
    if let Some(g) = out.groups.get_mut("default") {
        let mut t = super::entries::dedup(std::mem::take(&mut g.targets));
        t.sort();
        g.targets = t;
    }
    let keys: Vec<String> = out.targets.keys().cloned().collect();
    for k in keys {
        config.load_links(&k, &mut out.targets, &overrides, &mut Vec::new(), &mut out.fs_read)?;
    }
    Ok(out)
}

/// Joins a relative path onto a file's directory (buildx `rebaseContextPath`).
pub fn rebase_path(base: &str, p: &str) -> String {
    if base.is_empty() || p.is_empty() || is_special_context(p) || p.starts_with('/') {
        return p.to_string();
    }
    super::functions::clean_path(&format!("{base}/{p}"))
}

fn is_special_context(p: &str) -> bool {
    p.starts_with("cwd://")
        || p.starts_with("target:")
        || p.starts_with("docker-image:")
        || p.starts_with("oci-layout://")
        || is_remote(p)
}

/// A git or HTTP(S) URL context.
pub fn is_remote(p: &str) -> bool {
    p.starts_with("http://")
        || p.starts_with("https://")
        || p.starts_with("git://")
        || p.starts_with("git@")
        || p.starts_with("ssh://")
        || p.contains(".git#")
}

/// Under file-relative paths, makes contexts relative to their file's
/// directory (buildx `rebaseContextPaths`).
pub fn rebase_context_paths(c: &mut Config) {
    let bases: BTreeMap<String, (Option<String>, Option<String>)> =
        c.targets.iter().map(|t| (t.name.clone(), (t.context_base.clone(), t.default_context_base.clone()))).collect();
    for t in &mut c.targets {
        if let Some(r) = &t.context_base_ref
            && let Some((cb, db)) = bases.get(r)
        {
            match (cb, db) {
                (Some(b), _) => t.context_base = Some(b.clone()),
                (None, Some(b)) => t.context_base = Some(b.clone()),
                _ => {}
            }
        }
        match (&t.context, &t.context_base) {
            (Some(ctx), Some(base)) => t.context = Some(rebase_path(base, ctx)),
            (None, _) if t.default_context_base.is_some() => t.rebased = true,
            _ => {}
        }
        if let Some(ctxs) = &mut t.contexts {
            for (k, v) in ctxs.iter_mut() {
                if let Some(base) = t.contexts_base.get(k) {
                    *v = rebase_path(base, v);
                }
            }
        }
    }
}

/// `print` level: the context as the build sees it (`cwd://` removed, cleaned).
pub fn build_context_path(ctx: &str) -> String {
    match ctx.strip_prefix("cwd://") {
        Some(rest) => super::functions::clean_path(rest),
        None if is_remote(ctx) || ctx.contains("://") => ctx.to_string(),
        None => super::functions::clean_path(ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn go_path_match() {
        assert!(glob_match("web*", "webapp"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(!glob_match("web*", "app"));
    }
}
