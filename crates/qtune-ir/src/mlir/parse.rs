//! A small parser for the subset of MLIR generic syntax that Top-dialect
//! files use. It builds a flat description of the module; `reader.rs` turns
//! that into a graph.

use std::collections::HashMap;

use super::{MlirAttr, MlirError};

/// Deepest nesting of brackets accepted, so hostile input cannot exhaust
/// the stack.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TypeSpec {
    None,
    /// `dims` is `None` for `tensor<*x..>`.
    Tensor {
        dims: Option<Vec<usize>>,
        elem: String,
    },
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Loc {
    Unknown,
    Name(String),
    Alias(String),
    Fused(Vec<Loc>),
}

#[derive(Debug, Clone)]
pub(crate) struct ParsedOp {
    pub line: usize,
    /// SSA names of the results, expanded (`%5#0`, `%5#1` for `%5:2`).
    pub results: Vec<String>,
    pub name: String,
    pub operands: Vec<String>,
    pub attrs: Vec<(String, MlirAttr)>,
    pub result_types: Vec<TypeSpec>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedModule {
    pub name: String,
    pub attrs: Vec<(String, MlirAttr)>,
    pub args: Vec<(String, TypeSpec)>,
    pub ops: Vec<ParsedOp>,
    pub returns: Vec<String>,
    pub return_line: usize,
    pub loc_aliases: HashMap<String, Loc>,
}

pub(crate) struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    file: &'a str,
    depth: usize,
}

type PResult<T> = Result<T, MlirError>;

impl<'a> Parser<'a> {
    pub fn new(text: &'a str, file: &'a str) -> Self {
        Parser {
            text: text.as_bytes(),
            pos: 0,
            file,
            depth: 0,
        }
    }

    pub fn line_at(&self, pos: usize) -> usize {
        1 + self.text[..pos.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(MlirError::Parse {
            file: self.file.to_string(),
            line: self.line_at(self.pos),
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else if self.text[self.pos..].starts_with(b"//") {
                while let Some(b) = self.peek() {
                    if b == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// Skips whitespace and consumes `s` if it comes next.
    fn eat(&mut self, s: &str) -> bool {
        self.ws();
        if self.text[self.pos..].starts_with(s.as_bytes()) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str, what: &str) -> PResult<()> {
        if self.eat(s) {
            Ok(())
        } else {
            self.err(format!("expected `{s}` {what}, found {}", self.found()))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".to_string(),
            Some(_) => {
                let rest = &self.text[self.pos..];
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(rest.len())
                    .min(24);
                format!("`{}`", String::from_utf8_lossy(&rest[..end]))
            }
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nesting too deep");
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn is_ident_char(b: u8) -> bool {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'-')
    }

    /// A bare identifier (`func.func`, `module`, `top_run_mode`).
    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = if self.pos == start {
                b.is_ascii_alphabetic() || b == b'_'
            } else {
                Self::is_ident_char(b) && b != b'-'
            };
            if !ok {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start)
            .then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    fn string(&mut self) -> PResult<String> {
        self.ws();
        if self.peek() != Some(b'"') {
            return self.err(format!("expected a string, found {}", self.found()));
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return self.err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let esc = self.text.get(self.pos + 1).copied();
                    match esc {
                        Some(b'"') | Some(b'\\') => {
                            out.push(esc.unwrap_or(b'\\'));
                            self.pos += 2;
                        }
                        Some(b'n') => {
                            out.push(b'\n');
                            self.pos += 2;
                        }
                        Some(b't') => {
                            out.push(b'\t');
                            self.pos += 2;
                        }
                        _ => {
                            let hex = self.text.get(self.pos + 1..self.pos + 3);
                            let v = hex
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            match v {
                                Some(v) => {
                                    out.push(v);
                                    self.pos += 3;
                                }
                                None => return self.err("bad escape in string"),
                            }
                        }
                    }
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    /// `%name`, `%5#1`.
    fn ssa(&mut self) -> PResult<String> {
        self.ws();
        if self.peek() != Some(b'%') {
            return self.err(format!(
                "expected an SSA value `%...`, found {}",
                self.found()
            ));
        }
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'#') {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start + 1 {
            return self.err("expected a name after `%`");
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    /// Text up to the `>` that closes an already consumed `<`.
    fn balanced_angle(&mut self) -> PResult<String> {
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(b) = self.peek() {
            match b {
                b'<' => depth += 1,
                b'>' => {
                    depth -= 1;
                    if depth == 0 {
                        let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
                        self.pos += 1;
                        return Ok(s);
                    }
                }
                b'"' => {
                    self.string()?;
                    continue;
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.err("expected `>` to close `<`")
    }

    pub fn parse_type(&mut self) -> PResult<TypeSpec> {
        self.ws();
        let start = self.pos;
        let Some(word) = self.ident() else {
            return self.err(format!("expected a type, found {}", self.found()));
        };
        if word == "none" {
            return Ok(TypeSpec::None);
        }
        if word == "tensor" {
            if !self.eat("<") {
                return self.err("expected `<` after `tensor`");
            }
            let body = self.balanced_angle()?;
            let body = body.trim();
            // A trailing encoding (`, #enc`) is ignored.
            let body = body.split(',').next().unwrap_or("").trim();
            let parts: Vec<&str> = body.split('x').collect();
            let Some((elem, dims)) = parts.split_last() else {
                return self.err("empty tensor type");
            };
            if dims.first() == Some(&"*") {
                return Ok(TypeSpec::Tensor {
                    dims: None,
                    elem: elem.trim().to_string(),
                });
            }
            let mut out = Vec::new();
            for d in dims {
                match d.trim().parse::<usize>() {
                    Ok(v) => out.push(v),
                    Err(_) => {
                        return self.err(format!(
                            "expected a static dimension in `tensor<{body}>`, found `{d}`"
                        ));
                    }
                }
            }
            return Ok(TypeSpec::Tensor {
                dims: Some(out),
                elem: elem.trim().to_string(),
            });
        }
        if self.peek() == Some(b'<') {
            self.pos += 1;
            self.balanced_angle()?;
        }
        Ok(TypeSpec::Other(
            String::from_utf8_lossy(&self.text[start..self.pos]).into_owned(),
        ))
    }

    fn type_list(&mut self) -> PResult<Vec<TypeSpec>> {
        // `(t1, t2)` or a single type.
        if self.eat("(") {
            let mut v = Vec::new();
            if self.eat(")") {
                return Ok(v);
            }
            loop {
                v.push(self.parse_type()?);
                if self.eat(")") {
                    return Ok(v);
                }
                self.expect(",", "between types")?;
            }
        }
        Ok(vec![self.parse_type()?])
    }

    fn number(&mut self) -> PResult<(String, bool)> {
        self.ws();
        let start = self.pos;
        if matches!(self.peek(), Some(b'-') | Some(b'+')) {
            self.pos += 1;
        }
        let mut float = false;
        if self.text[self.pos..].starts_with(b"0x") || self.text[self.pos..].starts_with(b"0X") {
            self.pos += 2;
            while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                self.pos += 1;
            }
        } else {
            while let Some(b) = self.peek() {
                if b.is_ascii_digit() {
                    self.pos += 1;
                } else if b == b'.' || b == b'e' || b == b'E' {
                    float = true;
                    self.pos += 1;
                    if (b == b'e' || b == b'E') && matches!(self.peek(), Some(b'-') | Some(b'+')) {
                        self.pos += 1;
                    }
                } else {
                    break;
                }
            }
        }
        let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        if s.is_empty() || s == "-" || s == "+" {
            return self.err(format!("expected a number, found {}", self.found()));
        }
        Ok((s, float))
    }

    fn attr_value(&mut self) -> PResult<MlirAttr> {
        self.ws();
        self.enter()?;
        let v = self.attr_value_inner();
        self.leave();
        v
    }

    fn attr_value_inner(&mut self) -> PResult<MlirAttr> {
        match self.peek() {
            Some(b'"') => Ok(MlirAttr::Str(self.string()?)),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.attr_value()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",", "between array elements")?;
                    }
                }
                Ok(array_attr(items))
            }
            Some(b'#') => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(Self::is_ident_char) {
                    self.pos += 1;
                }
                if self.peek() == Some(b'<') {
                    self.pos += 1;
                    self.balanced_angle()?;
                }
                Ok(MlirAttr::Opaque(
                    String::from_utf8_lossy(&self.text[start..self.pos]).into_owned(),
                ))
            }
            Some(b) if b.is_ascii_digit() || b == b'-' || b == b'+' => {
                let (s, float) = self.number()?;
                let ty = if self.eat(":") {
                    match self.parse_type()? {
                        TypeSpec::Other(t) => t,
                        other => {
                            return self.err(format!("unexpected type {other:?} after a number"));
                        }
                    }
                } else if float {
                    "f64".to_string()
                } else {
                    "i64".to_string()
                };
                let is_float_type = ty.starts_with('f') || ty == "bf16";
                if is_float_type {
                    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                        match u64::from_str_radix(h, 16) {
                            Ok(bits) if ty == "f32" => u32::try_from(bits)
                                .ok()
                                .map(|b| f64::from(f32::from_bits(b))),
                            Ok(bits) => Some(f64::from_bits(bits)),
                            Err(_) => None,
                        }
                    } else {
                        s.parse::<f64>().ok()
                    };
                    match v {
                        Some(v) => Ok(MlirAttr::F64(v)),
                        None => self.err(format!("bad float `{s}`")),
                    }
                } else {
                    if float {
                        return self.err(format!("float `{s}` with integer type `{ty}`"));
                    }
                    match s.parse::<i64>() {
                        Ok(v) if ty == "si32" || ty == "i32" => match i32::try_from(v) {
                            Ok(v) => Ok(MlirAttr::SI32(v)),
                            Err(_) => self.err(format!("`{s}` does not fit {ty}")),
                        },
                        Ok(v) if ty == "i1" => Ok(MlirAttr::Bool(v != 0)),
                        Ok(v) => Ok(MlirAttr::I64(v)),
                        Err(_) => self.err(format!("bad integer `{s}`")),
                    }
                }
            }
            _ => {
                let start = self.pos;
                let Some(word) = self.ident() else {
                    return self.err(format!(
                        "expected an attribute value, found {}",
                        self.found()
                    ));
                };
                match word.as_str() {
                    "true" => Ok(MlirAttr::Bool(true)),
                    "false" => Ok(MlirAttr::Bool(false)),
                    _ => {
                        if self.peek() == Some(b'<') {
                            self.pos += 1;
                            self.balanced_angle()?;
                        }
                        Ok(MlirAttr::Opaque(
                            String::from_utf8_lossy(&self.text[start..self.pos]).into_owned(),
                        ))
                    }
                }
            }
        }
    }

    fn attr_dict(&mut self) -> PResult<Vec<(String, MlirAttr)>> {
        let mut out = Vec::new();
        if self.eat("}") {
            return Ok(out);
        }
        loop {
            self.ws();
            let key = if self.peek() == Some(b'"') {
                self.string()?
            } else {
                match self.ident() {
                    Some(k) => k,
                    None => {
                        return self.err(format!(
                            "expected an attribute name, found {}",
                            self.found()
                        ));
                    }
                }
            };
            let value = if self.eat("=") {
                self.attr_value()?
            } else {
                MlirAttr::Opaque("unit".into())
            };
            out.push((key, value));
            if self.eat("}") {
                return Ok(out);
            }
            self.expect(",", "between attributes")?;
        }
    }

    /// The inside of `loc(...)`.
    fn loc_inner(&mut self) -> PResult<Loc> {
        self.enter()?;
        let r = self.loc_inner_impl();
        self.leave();
        r
    }

    fn loc_inner_impl(&mut self) -> PResult<Loc> {
        self.ws();
        match self.peek() {
            Some(b'#') => {
                self.pos += 1;
                let name = self.ident().unwrap_or_default();
                Ok(Loc::Alias(format!("#{name}")))
            }
            Some(b'"') => {
                let name = self.string()?;
                // file:line:col, or a name with a child location.
                if self.eat(":") {
                    self.number()?;
                    self.expect(":", "in a file location")?;
                    self.number()?;
                } else if self.eat("(") {
                    self.loc_inner()?;
                    self.expect(")", "after a name location's child")?;
                }
                Ok(Loc::Name(name))
            }
            _ => match self.ident().as_deref() {
                Some("unknown") => Ok(Loc::Unknown),
                Some("fused") => {
                    if self.eat("<") {
                        self.balanced_angle()?;
                    }
                    self.expect("[", "after `fused`")?;
                    let mut parts = Vec::new();
                    if !self.eat("]") {
                        loop {
                            parts.push(self.loc_inner()?);
                            if self.eat("]") {
                                break;
                            }
                            self.expect(",", "between fused locations")?;
                        }
                    }
                    Ok(Loc::Fused(parts))
                }
                Some("callsite") => {
                    self.expect("(", "after `callsite`")?;
                    let callee = self.loc_inner()?;
                    if self.eat("at") {
                        self.loc_inner()?;
                    }
                    self.expect(")", "after a callsite location")?;
                    Ok(callee)
                }
                _ => self.err(format!("expected a location, found {}", self.found())),
            },
        }
    }

    fn opt_loc(&mut self) -> PResult<Loc> {
        if self.eat("loc") {
            self.expect("(", "after `loc`")?;
            let l = self.loc_inner()?;
            self.expect(")", "to close `loc(`")?;
            Ok(l)
        } else {
            Ok(Loc::Unknown)
        }
    }

    pub fn parse_module(&mut self) -> PResult<ParsedModule> {
        let mut m = ParsedModule::default();
        let mut seen_module = false;
        loop {
            self.ws();
            match self.peek() {
                None => break,
                Some(b'#') => {
                    self.pos += 1;
                    let name = format!("#{}", self.ident().unwrap_or_default());
                    self.expect("=", "after a location alias name")?;
                    if self.eat("loc") {
                        self.expect("(", "after `loc`")?;
                        let l = self.loc_inner()?;
                        self.expect(")", "to close `loc(`")?;
                        m.loc_aliases.insert(name, l);
                    } else {
                        self.attr_value()?;
                    }
                }
                _ => {
                    if seen_module {
                        return self.err(format!(
                            "expected a location alias after the module, found {}",
                            self.found()
                        ));
                    }
                    if !self.eat("module") {
                        return self.err(format!("expected `module`, found {}", self.found()));
                    }
                    seen_module = true;
                    self.module_body(&mut m)?;
                }
            }
        }
        if !seen_module {
            return self.err("expected `module`, found end of file");
        }
        Ok(m)
    }

    fn module_body(&mut self, m: &mut ParsedModule) -> PResult<()> {
        if self.eat("@") {
            self.ws();
            m.name = if self.peek() == Some(b'"') {
                self.string()?
            } else {
                self.ident().unwrap_or_default()
            };
        }
        if self.eat("attributes") {
            self.expect("{", "to open the module attributes")?;
            m.attrs = self.attr_dict()?;
        }
        self.expect("{", "to open the module body")?;
        let mut seen_func = false;
        loop {
            if self.eat("}") {
                break;
            }
            if !self.eat("func.func") {
                return self.err(format!(
                    "expected `func.func` or `}}`, found {}",
                    self.found()
                ));
            }
            if seen_func {
                return self.err("only one function (`@main`) is supported");
            }
            seen_func = true;
            self.func(m)?;
        }
        if !seen_func {
            return self.err("the module has no `func.func`");
        }
        self.opt_loc()?;
        Ok(())
    }

    fn func(&mut self, m: &mut ParsedModule) -> PResult<()> {
        self.eat("private");
        self.expect("@", "before the function name")?;
        self.ws();
        if self.peek() == Some(b'"') {
            self.string()?;
        } else {
            self.ident();
        }
        self.expect("(", "to open the function arguments")?;
        if !self.eat(")") {
            loop {
                let name = self.ssa()?;
                self.expect(":", "after an argument name")?;
                let ty = self.parse_type()?;
                if self.eat("{") {
                    self.attr_dict()?;
                }
                self.opt_loc()?;
                m.args.push((name, ty));
                if self.eat(")") {
                    break;
                }
                self.expect(",", "between function arguments")?;
            }
        }
        if self.eat("->") {
            self.type_list()?;
        }
        if self.eat("attributes") {
            self.expect("{", "to open the function attributes")?;
            self.attr_dict()?;
        }
        self.expect("{", "to open the function body")?;
        let mut returned = false;
        loop {
            self.ws();
            if self.eat("}") {
                break;
            }
            let line = self.line_at(self.pos);
            if self.eat("return") {
                returned = true;
                m.return_line = line;
                self.ws();
                if self.peek() == Some(b'%') {
                    loop {
                        m.returns.push(self.ssa()?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect(":", "after the returned values")?;
                    loop {
                        self.parse_type()?;
                        if !self.eat(",") {
                            break;
                        }
                    }
                }
                self.opt_loc()?;
                continue;
            }
            if returned {
                return self.err(format!(
                    "expected `}}` after `return`, found {}",
                    self.found()
                ));
            }
            m.ops.push(self.op(line)?);
        }
        if !returned {
            return self.err("the function has no `return`");
        }
        self.opt_loc()?;
        Ok(())
    }

    fn op(&mut self, line: usize) -> PResult<ParsedOp> {
        let mut results = Vec::new();
        self.ws();
        if self.peek() == Some(b'%') {
            loop {
                let name = self.ssa()?;
                if self.eat(":") {
                    let (n, _) = self.number()?;
                    let n: usize = match n.parse() {
                        Ok(n) if n <= 4096 => n,
                        _ => return self.err(format!("bad result count `{n}`")),
                    };
                    results.extend((0..n).map(|i| format!("{name}#{i}")));
                } else {
                    results.push(name);
                }
                if !self.eat(",") {
                    break;
                }
            }
            self.expect("=", "after the op results")?;
        }
        self.ws();
        if self.peek() != Some(b'"') {
            return self.err(format!(
                "expected a generic op name like `\"top.Conv\"`, found {}",
                self.found()
            ));
        }
        let name = self.string()?;
        self.expect("(", "to open the operands")?;
        let mut operands = Vec::new();
        if !self.eat(")") {
            loop {
                operands.push(self.ssa()?);
                if self.eat(")") {
                    break;
                }
                if !self.eat(",") {
                    return self.err(format!(
                        "expected `)` after operands, found {}",
                        self.found()
                    ));
                }
            }
        }
        let attrs = if self.eat("{") {
            self.attr_dict()?
        } else {
            Vec::new()
        };
        self.expect(":", "before the op type")?;
        let operand_types = self.type_list()?;
        if operand_types.len() != operands.len() {
            return self.err(format!(
                "`{name}` has {} operands but {} operand types",
                operands.len(),
                operand_types.len()
            ));
        }
        self.expect("->", "after the operand types")?;
        let result_types = self.type_list()?;
        if result_types.len() != results.len() {
            return self.err(format!(
                "`{name}` has {} results but {} result types",
                results.len(),
                result_types.len()
            ));
        }
        let loc = self.opt_loc()?;
        Ok(ParsedOp {
            line,
            results,
            name,
            operands,
            attrs,
            result_types,
            loc,
        })
    }
}

/// An array attribute from its parsed elements.
fn array_attr(items: Vec<MlirAttr>) -> MlirAttr {
    if items
        .iter()
        .all(|i| matches!(i, MlirAttr::I64(_) | MlirAttr::SI32(_)))
    {
        return MlirAttr::I64Array(items.iter().filter_map(MlirAttr::as_i64).collect());
    }
    if items
        .iter()
        .all(|i| matches!(i, MlirAttr::I64(_) | MlirAttr::SI32(_) | MlirAttr::F64(_)))
    {
        return MlirAttr::F64Array(items.iter().filter_map(MlirAttr::as_f64).collect());
    }
    if items.iter().all(|i| matches!(i, MlirAttr::Str(_))) {
        return MlirAttr::StrArray(
            items
                .into_iter()
                .filter_map(|i| match i {
                    MlirAttr::Str(s) => Some(s),
                    _ => None,
                })
                .collect(),
        );
    }
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    MlirAttr::Opaque(format!("[{}]", parts.join(", ")))
}
