//! Event-type patterns of whole dot-separated segments (AMQP topic rules): `*` matches
//! exactly one segment, `#` zero or more, anywhere in the pattern.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Word(String),
    One,
    Many,
}

#[derive(Debug, Clone)]
pub struct TypePattern {
    segs: Vec<Seg>,
}

impl TypePattern {
    /// `None` when `text` has no wildcard segment (it is then an exact type).
    pub fn parse(text: &str) -> Option<TypePattern> {
        let segs: Vec<Seg> = text
            .split('.')
            .map(|s| match s {
                "*" => Seg::One,
                "#" => Seg::Many,
                w => Seg::Word(w.to_string()),
            })
            .collect();
        if segs.iter().all(|s| matches!(s, Seg::Word(_))) {
            None
        } else {
            Some(TypePattern { segs })
        }
    }

    /// Linear in len(pattern) * len(type) (dynamic programming, no backtracking).
    pub fn matches(&self, event_type: &str) -> bool {
        let words: Vec<&str> = event_type.split('.').collect();
        let n = words.len();
        // reach[j]: the pattern prefix seen so far can consume exactly the first j words.
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for seg in &self.segs {
            let mut next = vec![false; n + 1];
            match seg {
                Seg::Word(w) => {
                    for j in 0..n {
                        if reach[j] && words[j] == w {
                            next[j + 1] = true;
                        }
                    }
                }
                Seg::One => {
                    for j in 0..n {
                        if reach[j] {
                            next[j + 1] = true;
                        }
                    }
                }
                Seg::Many => {
                    let mut any = false;
                    for j in 0..=n {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
            }
            reach = next;
        }
        reach[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TypePattern::parse(p).expect("pattern").matches(t)
    }

    #[test]
    fn exact_types_are_not_patterns() {
        assert!(TypePattern::parse("order.created").is_none());
        assert!(TypePattern::parse("a*b.c").is_none());
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order"));
        assert!(!m("order.*", "order.created.v2"));
        assert!(m("*.created", "order.created"));
    }

    #[test]
    fn hash_matches_zero_or_more() {
        assert!(m("inventory.#", "inventory"));
        assert!(m("inventory.#", "inventory.stock.depleted"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("a.#.z", "a.b.c"));
        assert!(m("#", "anything.at.all"));
        assert!(m("#.done", "done"));
        assert!(m("*.#", "x"));
        assert!(!m("*.*.#", "x"));
    }
}
