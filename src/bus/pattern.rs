//! Topic-name patterns (linear-time regex, whole-name match) and the topic of the event this
//! thread is dispatching (`nova._core.current_topic()`).

use pyo3::prelude::*;
use pyo3::types::PyString;
use regex::Regex;

use crate::errors::validation_error;

/// A topic-name pattern on Rust's linear-time regex engine, matched against whole names
/// (`nova._core.TopicPattern`, also used by distributed backends).
#[pyclass(module = "nova._core", frozen)]
pub struct TopicPattern {
    pub(super) re: Regex,
    pub(super) pattern: String,
}

impl TopicPattern {
    pub(super) fn compile(py: Python<'_>, pattern: &str) -> PyResult<TopicPattern> {
        // Check the pattern as written, so the error's position is in the user's text.
        if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(pattern) {
            let at = pattern[..e.span().start.offset].chars().count();
            return Err(validation_error(
                py,
                format!("invalid topic pattern {pattern:?} at position {at}: {}\n{e}", e.kind()),
            ));
        }
        Regex::new(pattern).map_err(|e| validation_error(py, format!("invalid topic pattern {pattern:?}: {e}")))?;
        let re = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| validation_error(py, format!("invalid topic pattern {pattern:?}: {e}")))?;
        Ok(TopicPattern { re, pattern: pattern.to_string() })
    }
}

#[pymethods]
impl TopicPattern {
    #[new]
    pub(super) fn new(py: Python<'_>, pattern: &str) -> PyResult<Self> {
        TopicPattern::compile(py, pattern)
    }

    /// Whether the whole of `name` matches.
    pub(super) fn fullmatch(&self, name: &str) -> bool {
        self.re.is_match(name)
    }

    #[getter]
    pub(super) fn pattern(&self) -> &str {
        &self.pattern
    }

    pub(super) fn __repr__(&self) -> String {
        format!("TopicPattern({:?})", self.pattern)
    }
}

thread_local! {
    static CURRENT_TOPIC: std::cell::RefCell<Option<Py<PyString>>> = const { std::cell::RefCell::new(None) };
}

/// Marks the topic whose event this thread is dispatching, for middleware that reports it
/// (`nova._core.current_topic()`), until dropped.
pub(super) struct CurrentTopic(Option<Py<PyString>>);

impl CurrentTopic {
    pub(super) fn enter(py: Python<'_>, name: &Py<PyString>) -> CurrentTopic {
        CurrentTopic(CURRENT_TOPIC.with(|c| c.replace(Some(name.clone_ref(py)))))
    }
}

impl Drop for CurrentTopic {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT_TOPIC.with(|c| *c.borrow_mut() = prev);
    }
}

/// The bus topic of the event being dispatched on this thread, or None (an emitter, or no
/// dispatch). Middleware such as TracingMiddleware uses it.
#[pyfunction]
pub(super) fn current_topic(py: Python<'_>) -> Option<Py<PyString>> {
    CURRENT_TOPIC.with(|c| c.borrow().as_ref().map(|t| t.clone_ref(py)))
}
