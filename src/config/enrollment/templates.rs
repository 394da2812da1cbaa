//! `[[enrollment.templates]]`: what an enrolled machine's license grants, by name.

use super::{Context, DAY, EnrollmentSection, HOUR, MAX_LICENSE_LIFETIME, Template, bounded};
use crate::report::Report;

pub(super) fn templates(s: &EnrollmentSection, cx: &Context<'_>, r: &mut Report) -> Vec<Template> {
    if s.templates.is_empty() {
        r.error(
            "enrollment.templates",
            "at least one [[enrollment.templates]] is required: a token names one",
        );
    }
    let mut out: Vec<Template> = Vec::new();
    for (i, t) in s.templates.iter().enumerate() {
        let key = format!("enrollment.templates[{i}]");
        let name = match t.name.as_deref() {
            Some(n) if super::super::issuer::is_label(n) => n.to_owned(),
            Some(n) => {
                r.error(
                    format!("{key}.name"),
                    format!("\"{n}\" must be 1 to 64 of A-Z a-z 0-9 _ . -"),
                );
                continue;
            }
            None => {
                r.error(format!("{key}.name"), "required");
                continue;
            }
        };
        if out.iter().any(|o| o.name == name) {
            r.error(
                format!("{key}.name"),
                format!("template name \"{name}\" is used twice"),
            );
        }
        let routes = t.routes.clone().unwrap_or_default();
        for (j, route) in routes.iter().enumerate() {
            if !cx.routes.contains(&route.as_str()) {
                r.error(
                    format!("{key}.routes[{j}]"),
                    format!("no route is named \"{route}\""),
                );
            }
        }
        let Some(license_lifetime) = bounded(
            r,
            &format!("{key}.license_lifetime"),
            t.license_lifetime.as_deref(),
            30 * DAY,
            (HOUR, MAX_LICENSE_LIFETIME),
        ) else {
            continue;
        };
        if let Some(q) = t.quota.as_deref() {
            match crate::limits::Quota::parse(q) {
                Ok(parsed) if parsed.to_text() == q => {}
                Ok(parsed) => r.error(
                    format!("{key}.quota"),
                    format!("write \"{}\"", parsed.to_text()),
                ),
                Err(why) => r.error(format!("{key}.quota"), format!("\"{q}\" {why}")),
            }
        }
        out.push(Template {
            customer: t.customer.clone().unwrap_or_else(|| name.clone()),
            name,
            routes,
            license_lifetime,
            quota: t.quota.clone(),
        });
    }
    out
}
