//! Tag filter expressions: `*` or `a || b || c`.
use crate::status::ApiError;
use crate::v2::{Code, FilterExpression, FilterType};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    All,
    AnyOf(Vec<String>),
}

impl TagFilter {
    pub fn parse(expression: Option<&FilterExpression>) -> Result<TagFilter, ApiError> {
        let Some(expression) = expression else { return Ok(TagFilter::All) };
        match FilterType::try_from(expression.r#type).unwrap_or(FilterType::Unspecified) {
            FilterType::Tag | FilterType::Unspecified => {}
            FilterType::Sql => return Err(ApiError::new(Code::IllegalFilterExpression, "SQL filters are not supported; use tags")),
        }
        let text = expression.expression.trim();
        if text.is_empty() || text == "*" {
            return Ok(TagFilter::All);
        }
        let tags: Vec<String> = text.split("||").map(|t| t.trim().to_string()).collect();
        if tags.iter().any(|t| t.is_empty() || t == "*") {
            return Err(ApiError::new(Code::IllegalFilterExpression, format!("filter {text:?} is not `*` or `tag || tag`")));
        }
        Ok(TagFilter::AnyOf(tags))
    }

    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::AnyOf(tags) => tag.is_some_and(|t| tags.iter().any(|x| x == t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(expression: &str) -> Option<FilterExpression> {
        Some(FilterExpression { r#type: FilterType::Tag as i32, expression: expression.into() })
    }

    // Goal: tag expressions select exactly the listed tags, and malformed ones are rejected.
    #[test]
    fn tag_filters_parse_and_match() {
        let f = TagFilter::parse(tag("a || b").as_ref()).unwrap();
        assert!(f.matches(Some("a")) && f.matches(Some("b")) && !f.matches(Some("c")) && !f.matches(None));
        assert!(TagFilter::parse(tag("*").as_ref()).unwrap().matches(None));
        for bad in ["a ||", "|| a", "a || * "] {
            assert_eq!(TagFilter::parse(tag(bad).as_ref()).unwrap_err().code, Code::IllegalFilterExpression);
        }
    }
}
