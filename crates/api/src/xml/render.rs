//! XML response documents: a small element tree, written out by quick-xml (which does
//! the escaping), in the S3 namespace.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub struct El {
    name: &'static str,
    text: Option<String>,
    children: Vec<El>,
}

impl El {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            text: None,
            children: vec![],
        }
    }

    pub fn text(name: &'static str, value: impl Into<String>) -> Self {
        Self {
            name,
            text: Some(value.into()),
            children: vec![],
        }
    }

    pub fn child(mut self, c: El) -> Self {
        self.children.push(c);
        self
    }

    pub fn add(&mut self, c: El) {
        self.children.push(c);
    }

    /// Adds `<name>value</name>` when there is a value.
    pub fn opt(mut self, name: &'static str, value: Option<impl Into<String>>) -> Self {
        if let Some(v) = value {
            self.children.push(El::text(name, v));
        }
        self
    }

    fn write(&self, w: &mut Writer<Vec<u8>>, ns: bool) -> std::io::Result<()> {
        let mut start = BytesStart::new(self.name);
        if ns {
            start.push_attribute(("xmlns", XMLNS));
        }
        w.write_event(Event::Start(start))?;
        if let Some(t) = &self.text {
            w.write_event(Event::Text(BytesText::new(t)))?;
        }
        for c in &self.children {
            c.write(w, false)?;
        }
        w.write_event(Event::End(BytesEnd::new(self.name)))
    }

    /// The document, its root in the S3 namespace.
    pub fn to_xml(&self) -> String {
        self.to_xml_ns(true)
    }

    /// Error documents carry no namespace, as S3's do not.
    pub fn to_xml_ns(&self, ns: bool) -> String {
        let mut w = Writer::new(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)));
        let _ = self.write(&mut w, ns);
        String::from_utf8(w.into_inner()).unwrap_or_default()
    }
}

/// A 200 response with `root` as its body.
pub fn document(root: El) -> Response {
    let mut resp = (StatusCode::OK, root.to_xml()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

/// Timestamps in listings: ISO 8601 with milliseconds, as S3 writes them.
pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `Last-Modified` and the like: RFC 7231 dates.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_escape_their_text() {
        let doc = El::new("ListBucketResult")
            .child(El::text("Name", "b"))
            .child(El::new("Contents").child(El::text("Key", "a<b>&\"c\"")))
            .to_xml();
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(doc.contains("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"));
        assert!(doc.contains("<Key>a&lt;b&gt;&amp;&quot;c&quot;</Key>"), "{doc}");
    }
}
