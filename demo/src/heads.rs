//! Real request heads, captured from real clients (browsers, text browsers,
//! command-line tools, HTTP libraries) into `tests/data/heads/`, replayed
//! byte-exact: only the request target and the `Host` value are rewritten
//! (`Head::render`), everything else (header order, casing, values, the
//! HTTP version) goes out as captured.

use std::path::PathBuf;

use crate::traffic::Rng;

/// Where the captures live, relative to the crate.
pub const DIR: &str = "tests/data/heads";

/// One captured request head and what `index.tsv` says of it.
#[derive(Clone, Debug)]
pub struct Head {
    /// The client's name (`curl`, `python-requests`, `chromium`, ...).
    pub client: String,
    /// `browser`, `headless`, `text-browser`, `tool` or `library`.
    pub family: String,
    /// `document`, `style`, `image`, `script`, `fetch`, `favicon` (browsers)
    /// or `plain` (tools and libraries).
    pub kind: String,
    /// `localhost` (a secure context for browsers) or `plain`
    /// (`shop.test`, plain HTTP).
    pub origin: String,
    /// The request line up to its target (`GET `).
    method: String,
    /// From the space after the target to the end: ` HTTP/1.1\r\n...\r\n\r\n`.
    rest: Vec<u8>,
    /// Where the `Host` value starts and ends in `rest`.
    host: (usize, usize),
    /// The captured `Host` value's name part (without the port).
    host_name: String,
}

/// Every captured head, from `index.tsv`.
pub struct Heads(pub Vec<Head>);

impl Heads {
    /// Reads `tests/data/heads/index.tsv` and every file it lists, with an
    /// error that says what is missing.
    pub fn load() -> Result<Heads, String> {
        // The captures live in the library's `tests/data/`; this package sits
        // one level below it.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(DIR);
        let index = dir.join("index.tsv");
        let text = std::fs::read_to_string(&index).map_err(|e| {
            format!(
                "{}: {e}. The replay scenarios (mixed-clients, diverse-botnet, \
                 spoofed-browser, perfect-browser) send real captured request heads; \
                 capture them with scripts/capture_heads.py (see {DIR}/README.md)",
                index.display()
            )
        })?;
        let mut heads = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let [file, client, family, kind, origin] = f[..] else {
                return Err(format!("{}: bad line {line:?}", index.display()));
            };
            if file == "file" {
                continue; // a header line
            }
            let path = dir.join(file);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let head = Head::parse(bytes, [client, family, kind, origin])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            heads.push(head);
        }
        if heads.is_empty() {
            return Err(format!("{}: no heads listed", index.display()));
        }
        Ok(Heads(heads))
    }

    /// The GET heads of `families` from `origin`, in index order.
    pub fn select(&self, families: &[&str], kind: Option<&str>, origin: &str) -> Vec<Head> {
        self.0
            .iter()
            .filter(|h| families.contains(&h.family.as_str()) && h.origin == origin)
            .filter(|h| kind.is_none_or(|k| h.kind == k))
            .filter(|h| h.method == "GET")
            .cloned()
            .collect()
    }

    /// The one head of `client`, `kind` and `origin`, or an error naming it.
    pub fn find(&self, client: &str, kind: &str, origin: &str) -> Result<Head, String> {
        self.0
            .iter()
            .find(|h| h.client == client && h.kind == kind && h.origin == origin)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no captured head of {client} ({kind}, {origin}) in {DIR}/index.tsv; \
                     re-capture with scripts/capture_heads.py"
                )
            })
    }
}

impl Head {
    fn parse(bytes: Vec<u8>, [client, family, kind, origin]: [&str; 4]) -> Result<Head, String> {
        if !bytes.ends_with(b"\r\n\r\n") {
            return Err("a request head must end with CRLF CRLF".into());
        }
        let line_end = find(&bytes, b"\r\n").ok_or("no request line")?;
        let line = std::str::from_utf8(&bytes[..line_end]).map_err(|_| "request line not UTF-8")?;
        let mut parts = line.splitn(3, ' ');
        let (Some(method), Some(_target), Some(_version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad request line {line:?}"));
        };
        let after_target = method.len() + 1 + _target.len();
        let rest = bytes[after_target..].to_vec();
        // The Host line: its value starts after the colon and any spaces.
        let mut host = None;
        let mut at = line_end - after_target + 2;
        while at < rest.len() {
            let end = at + find(&rest[at..], b"\r\n").ok_or("unterminated header line")?;
            let l = &rest[at..end];
            if let Some(colon) = l.iter().position(|&b| b == b':')
                && l[..colon].eq_ignore_ascii_case(b"host")
            {
                let spaces = l[colon + 1..].iter().take_while(|&&b| b == b' ').count();
                host = Some((at + colon + 1 + spaces, end));
                break;
            }
            at = end + 2;
        }
        let host = host.ok_or("no Host header")?;
        let value = String::from_utf8_lossy(&rest[host.0..host.1]).into_owned();
        let host_name = value
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(value.as_str(), |(name, _)| name)
            .to_owned();
        Ok(Head {
            client: client.into(),
            family: family.into(),
            kind: kind.into(),
            origin: origin.into(),
            method: method.into(),
            rest,
            host,
            host_name,
        })
    }

    /// The head as captured but for its target (`target`) and its `Host`
    /// value (the captured host name with the shop's `port`).
    pub fn render(&self, target: &str, port: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rest.len() + target.len() + 16);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(&self.rest[..self.host.0]);
        out.extend_from_slice(format!("{}:{port}", self.host_name).as_bytes());
        out.extend_from_slice(&self.rest[self.host.1..]);
        out
    }

    /// Whether the connection cannot be reused after a request with this
    /// head (HTTP/1.0 without keep-alive, or `Connection: close`).
    pub fn closes(&self) -> bool {
        let text = String::from_utf8_lossy(&self.rest).to_ascii_lowercase();
        let http10 = text.starts_with(" http/1.0");
        let keep_alive = text.contains("\r\nconnection: keep-alive\r\n");
        (http10 && !keep_alive) || text.contains("\r\nconnection: close\r\n")
    }

    /// The value of header `name` as captured, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.rest);
        text.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// A copy with header `name`'s value replaced (name, casing, position
    /// and everything else kept), or `None` if the head has no such header.
    pub fn with_header(&self, name: &str, value: &str) -> Option<Head> {
        let mut at = find(&self.rest, b"\r\n")? + 2;
        while at < self.rest.len() {
            let end = at + find(&self.rest[at..], b"\r\n")?;
            let l = &self.rest[at..end];
            if let Some(colon) = l.iter().position(|&b| b == b':')
                && l[..colon].eq_ignore_ascii_case(name.as_bytes())
            {
                let spaces = l[colon + 1..].iter().take_while(|&&b| b == b' ').count();
                let start = at + colon + 1 + spaces;
                let mut rest = self.rest[..start].to_vec();
                rest.extend_from_slice(value.as_bytes());
                rest.extend_from_slice(&self.rest[end..]);
                let mut h = self.clone();
                // The Host value moves if it comes after this header.
                let delta = value.len() as isize - (end - start) as isize;
                if h.host.0 > start {
                    h.host = (
                        (h.host.0 as isize + delta) as usize,
                        (h.host.1 as isize + delta) as usize,
                    );
                }
                h.rest = rest;
                return Some(h);
            }
            at = end + 2;
        }
        None
    }

    /// A copy carrying `cookie`: the captured Cookie's value replaced, or a
    /// Cookie header added last, where Chrome sends it over HTTP/1.1.
    pub fn with_cookie(&self, cookie: &str) -> Head {
        if let Some(h) = self.with_header("cookie", cookie) {
            return h;
        }
        let mut h = self.clone();
        let end = h.rest.len() - 2;
        h.rest.truncate(end);
        h.rest
            .extend_from_slice(format!("Cookie: {cookie}\r\n\r\n").as_bytes());
        h
    }

    /// A bot's variation of the head: the header names in one casing drawn
    /// per request (as captured, lower case, Title-Case or UPPER CASE) and
    /// one extra header `X-Req-<random>: <random>` at a random place among
    /// them; the target and `Host` value as `render` makes them.
    pub fn render_varied(&self, target: &str, port: u16, rng: &mut Rng) -> Vec<u8> {
        let plain = self.render(target, port);
        let text = String::from_utf8_lossy(&plain);
        let mut lines: Vec<String> = text
            .trim_end_matches("\r\n")
            .split("\r\n")
            .map(str::to_owned)
            .collect();
        let casing = rng.below(4);
        for l in lines.iter_mut().skip(1) {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let name = match casing {
                0 => name.to_owned(),
                1 => name.to_ascii_lowercase(),
                2 => title_case(name),
                _ => name.to_ascii_uppercase(),
            };
            *l = format!("{name}:{value}");
        }
        let extra = format!("X-Req-{}: {}", rng.word(4, 10), rng.word(8, 24));
        let at = 1 + rng.below(lines.len() as u64) as usize;
        lines.insert(at, extra);
        let mut out = lines.join("\r\n");
        out.push_str("\r\n\r\n");
        out.into_bytes()
    }
}

fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
