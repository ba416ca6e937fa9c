#!/usr/bin/python3
"""Generates the AMQP 0-9-1 method codec (methods.hpp / methods.cpp).

Input: the spec XML Debian's amqp-specs ships (0-9-1-rabbit flavour) plus
rabbit-extensions.xml (methods that XML lacks, same format; merged into the
class of the same name, appended after its own methods).

Output is a pure function of the inputs (no timestamps, no dict-order
surprises), so rebuilding from the same XML yields identical files.
"""

import argparse
import os
import sys
import xml.etree.ElementTree as ET

PRIMITIVES = {
    # xml type: (C++ type, default initialiser)
    "bit": ("bool", " = false"),
    "octet": ("uint8_t", " = 0"),
    "short": ("uint16_t", " = 0"),
    "long": ("uint32_t", " = 0"),
    "longlong": ("uint64_t", " = 0"),
    "timestamp": ("uint64_t", " = 0"),
    "shortstr": ("std::string_view", ""),
    "longstr": ("std::string_view", ""),
    "table": ("FieldTable", ""),
}

CPP_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break",
    "case", "catch", "char", "class", "compl", "concept", "const", "consteval", "constexpr",
    "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype",
    "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export",
    "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long",
    "mutable", "namespace", "new", "noexcept", "not", "not_eq", "nullptr", "operator", "or",
    "or_eq", "private", "protected", "public", "register", "reinterpret_cast", "requires",
    "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast", "struct",
    "switch", "template", "this", "thread_local", "throw", "true", "try", "typedef", "typeid",
    "typename", "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while",
    "xor", "xor_eq",
    # names the generated structs already use
    "class_id", "method_id", "key", "has_content", "synchronous", "name", "visit_fields",
}


# connection.close and channel.close carry the failing method's class-id and
# method-id as *fields*, which would collide with every struct's static
# class_id / method_id. The spec labels them "failing method class/ID".
FIELD_RENAMES = {
    "class_id": "failing_class_id",
    "method_id": "failing_method_id",
}


class Field:
    def __init__(self, xml_name, xml_type):
        self.xml_name = xml_name
        self.xml_type = xml_type
        self.ident = xml_name.replace("-", "_")
        self.ident = FIELD_RENAMES.get(self.ident, self.ident)
        if self.ident in CPP_KEYWORDS or not self.ident.isidentifier():
            sys.exit(f"gen_codec: field name {xml_name!r} is not usable as a C++ member")
        self.cpp_type, self.init = PRIMITIVES[xml_type]


class Method:
    def __init__(self, cls_name, cls_index, elem, domains):
        self.cls_name = cls_name
        self.class_id = cls_index
        self.xml_name = elem.get("name")
        self.method_id = int(elem.get("index"))
        self.full_name = f"{cls_name}.{self.xml_name}"
        self.struct = camel(cls_name) + camel(self.xml_name)
        self.has_content = elem.get("content") == "1"
        self.synchronous = elem.get("synchronous") == "1"
        self.fields = []
        for f in elem.findall("field"):
            self.fields.append(Field(f.get("name"), resolve(f, domains, self.full_name)))
        if not (0 < self.class_id < 65536 and 0 < self.method_id < 65536):
            sys.exit(f"gen_codec: {self.full_name}: ids out of range")

    @property
    def key(self):
        return (self.class_id << 16) | self.method_id


def camel(xml_name):
    return "".join(part.capitalize() for part in xml_name.split("-"))


def resolve(field, domains, where):
    """A field names either a domain (domain=) or, for reserved fields, a type (type=)."""
    name = field.get("domain") or field.get("type")
    seen = set()
    while name not in PRIMITIVES:
        if name in seen or name not in domains:
            sys.exit(f"gen_codec: {where}.{field.get('name')}: cannot resolve domain {name!r}")
        seen.add(name)
        name = domains[name]
    return name


def load(spec_path, ext_path):
    spec = ET.parse(spec_path).getroot()
    ext = ET.parse(ext_path).getroot() if ext_path else None
    domains = {}
    for root in [spec] + ([ext] if ext is not None else []):
        for d in root.findall("domain"):
            domains[d.get("name")] = d.get("type")
    # Domains that name themselves ("bit" -> "bit") are primitives already.
    domains = {k: v for k, v in domains.items() if k != v}

    classes = []  # [(name, index, [method elements])] in XML order
    for c in spec.findall("class"):
        classes.append((c.get("name"), int(c.get("index")), list(c.findall("method"))))
    if ext is not None:
        for c in ext.findall("class"):
            for entry in classes:
                if entry[0] == c.get("name"):
                    if entry[1] != int(c.get("index")):
                        sys.exit(f"gen_codec: class {entry[0]} index differs in extensions")
                    entry[2].extend(c.findall("method"))
                    break
            else:
                classes.append((c.get("name"), int(c.get("index")), list(c.findall("method"))))

    methods = []
    for name, index, elems in classes:
        for e in elems:
            methods.append(Method(name, index, e, domains))
    keys, structs = set(), set()
    for m in methods:
        if m.key in keys or m.struct in structs:
            sys.exit(f"gen_codec: duplicate method {m.full_name} ({m.class_id},{m.method_id})")
        keys.add(m.key)
        structs.add(m.struct)
    return methods


def bit_groups(fields):
    """Yields (kind, payload): ("bits", [fields]) for a run of <= 8 bits, else ("field", f)."""
    run = []
    for f in fields:
        if f.xml_type == "bit":
            run.append(f)
            if len(run) == 8:
                yield ("bits", run)
                run = []
            continue
        if run:
            yield ("bits", run)
            run = []
        yield ("field", f)
    if run:
        yield ("bits", run)


def gen_header(methods):
    o = []
    w = o.append
    w("// Generated by net/amqp/spec/gen_codec.py from the AMQP 0-9-1 spec XML. Do not edit.")
    w("//")
    w("// One struct per AMQP method; Method is a variant over all of them (XML order).")
    w("// Decoded string_views point into the decoded payload: keep the payload alive")
    w("// (or copy) while the method is in use.")
    w("#pragma once")
    w("")
    w("#include <cstdint>")
    w("#include <string>")
    w("#include <string_view>")
    w("#include <variant>")
    w("")
    w('#include "net/amqp/field_table.hpp"')
    w('#include "net/amqp/frame.hpp"')
    w("")
    w("namespace sluice::amqp {")
    w("")
    w("constexpr uint32_t method_key(uint16_t class_id, uint16_t method_id) {")
    w("    return (uint32_t(class_id) << 16) | method_id;")
    w("}")
    w("")
    w("namespace method {")
    for m in methods:
        w("")
        w(f"// {m.full_name} ({m.class_id}, {m.method_id})")
        w(f"struct {m.struct} {{")
        w(f"    static constexpr uint16_t class_id = {m.class_id};")
        w(f"    static constexpr uint16_t method_id = {m.method_id};")
        w(f"    static constexpr uint32_t key = method_key({m.class_id}, {m.method_id});")
        w(f"    static constexpr bool has_content = {'true' if m.has_content else 'false'};")
        w(f"    static constexpr bool synchronous = {'true' if m.synchronous else 'false'};")
        w(f'    static constexpr std::string_view name = "{m.full_name}";')
        for f in m.fields:
            note = ""
            if f.ident != f.xml_name.replace("-", "_"):
                note = f'  // XML "{f.xml_name}"; {f.xml_name.replace("-", "_")} is this struct\'s own id'
            w(f"    {f.cpp_type} {f.ident}{f.init};{note}")
        w("")
        w(f"    bool operator==(const {m.struct}&) const = default;")
        w("    // Calls f(\"xml-field-name\", member) for every field, in wire order.")
        for const in ("", " const"):
            arg = "F&& f" if m.fields else "F&&"
            w(f"    template <typename F> void visit_fields({arg}){const} {{")
            for f in m.fields:
                w(f'        f(std::string_view("{f.xml_name}"), {f.ident});')
            w("    }")
        w("};")
    w("")
    w("}  // namespace method")
    w("")
    w("using Method = std::variant<std::monostate,")
    for i, m in enumerate(methods):
        sep = ">;" if i == len(methods) - 1 else ","
        w(f"                            method::{m.struct}{sep}")
    w("")
    w(f"inline constexpr size_t kMethodCount = {len(methods)};")
    w("")
    w("enum class DecodeError { none, truncated, unknown_method, bad_table, trailing_bytes };")
    w("")
    w("// payload = the whole method frame payload (class-id, method-id, arguments).")
    w("// On success `out` holds the method and its string_views point INTO `payload`;")
    w("// on error `out` is std::monostate. Bytes left after the last argument are")
    w("// `trailing_bytes` (RabbitMQ refuses them too: its decoder matches the whole")
    w("// payload); so is a shortstr whose length octet wrapped (256 bytes sent as 0).")
    w("// A table whose length prefix overruns the payload is `truncated`; a table")
    w("// that is malformed inside is `bad_table`.")
    w("DecodeError decode_method(std::string_view payload, Method& out);")
    w("// (class-id, method-id) of a method payload without decoding; 0 if shorter than 4 bytes.")
    w("uint32_t peek_method_key(std::string_view payload);")
    w('// "basic.publish" for a known (class, method), "" otherwise.')
    w("std::string_view method_name(uint32_t key);")
    w("// Whether a known method is followed by a content header (and body); false if unknown.")
    w("bool method_has_content(uint32_t key);")
    w("")
    w("// Decode only the arguments (the payload after class-id and method-id) into one")
    w("// concrete struct; same rules as decode_method.")
    for m in methods:
        w(f"DecodeError decode_arguments(std::string_view args, method::{m.struct}& out);")
    w("")
    w("// Appends class-id, method-id and the arguments (consecutive bits share octets,")
    w("// LSB first). A shortstr longer than 255 bytes is truncated to 255 (callers")
    w("// validate names before encoding).")
    for m in methods:
        w(f"void encode(std::string& out, const method::{m.struct}& m);")
    w("// Dispatches on the variant; std::monostate appends nothing.")
    w("void encode_method(std::string& out, const Method& m);")
    w("inline void encode(std::string& out, const Method& m) { encode_method(out, m); }")
    w("")
    w("// Appends a complete method frame (frame header, encoded method, frame-end).")
    w("template <typename M>")
    w("void write_method(std::string& out, uint16_t channel, const M& m) {")
    w("    const size_t start = begin_frame(out, kFrameMethod, channel);")
    w("    encode(out, m);")
    w("    end_frame(out, start);")
    w("}")
    w("")
    w("// Typed dispatch for the hot path: decodes `payload` into the concrete struct")
    w("// on the stack and calls handler(const M&) for it (no variant). The handler")
    w("// must accept every method type (e.g. a generic lambda with if constexpr).")
    w("template <typename Handler>")
    w("DecodeError dispatch_method(std::string_view payload, Handler&& handler) {")
    w("    if (payload.size() < 4) return DecodeError::truncated;")
    w("    const std::string_view args = payload.substr(4);")
    w("    switch (peek_method_key(payload)) {")
    for m in methods:
        w(f"    case method::{m.struct}::key: {{")
        w(f"        method::{m.struct} m;")
        w("        if (auto e = decode_arguments(args, m); e != DecodeError::none) return e;")
        w(f"        handler(static_cast<const method::{m.struct}&>(m));")
        w("        return DecodeError::none;")
        w("    }")
    w("    default:")
    w("        return DecodeError::unknown_method;")
    w("    }")
    w("}")
    w("")
    w("}  // namespace sluice::amqp")
    return "\n".join(o) + "\n"


def gen_decoder(m):
    o = []
    w = o.append
    if not m.fields:
        w(f"DecodeError decode_arguments(std::string_view args, method::{m.struct}&) {{")
        w("    return args.empty() ? DecodeError::none : DecodeError::trailing_bytes;")
        w("}")
        return o
    w(f"DecodeError decode_arguments(std::string_view args, method::{m.struct}& out) {{")
    w("    WireReader r(args);")
    has_table = any(f.xml_type == "table" for f in m.fields)
    if has_table:
        w("    DecodeError err = DecodeError::none;")
    for kind, x in bit_groups(m.fields):
        if kind == "bits":
            w("    {")
            w("        const uint8_t bits = r.u8();")
            for i, f in enumerate(x):
                w(f"        out.{f.ident} = (bits & {1 << i}) != 0;")
            w("    }")
            continue
        f = x
        t = f.xml_type
        if t == "octet":
            w(f"    out.{f.ident} = r.u8();")
        elif t == "short":
            w(f"    out.{f.ident} = r.u16();")
        elif t == "long":
            w(f"    out.{f.ident} = r.u32();")
        elif t in ("longlong", "timestamp"):
            w(f"    out.{f.ident} = r.u64();")
        elif t == "shortstr":
            w(f"    out.{f.ident} = r.shortstr();")
        elif t == "longstr":
            w(f"    out.{f.ident} = r.longstr();")
        elif t == "table":
            w(f"    if (!read_table(r, args, out.{f.ident}, err)) return err;")
    w("    if (!r.ok()) return DecodeError::truncated;")
    w("    return r.at_end() ? DecodeError::none : DecodeError::trailing_bytes;")
    w("}")
    return o


def gen_encoder(m):
    o = []
    w = o.append
    param = " m" if m.fields else ""
    w(f"void encode(std::string& out, const method::{m.struct}&{param}) {{")
    w(f"    put_u32(out, method::{m.struct}::key);")
    for kind, x in bit_groups(m.fields):
        if kind == "bits":
            terms = " | ".join(f"(m.{f.ident} ? {1 << i} : 0)" for i, f in enumerate(x))
            w(f"    put_u8(out, static_cast<uint8_t>({terms}));")
            continue
        f = x
        t = f.xml_type
        if t == "octet":
            w(f"    put_u8(out, m.{f.ident});")
        elif t == "short":
            w(f"    put_u16(out, m.{f.ident});")
        elif t == "long":
            w(f"    put_u32(out, m.{f.ident});")
        elif t in ("longlong", "timestamp"):
            w(f"    put_u64(out, m.{f.ident});")
        elif t == "shortstr":
            w(f"    put_shortstr(out, m.{f.ident}.substr(0, 255));")
        elif t == "longstr":
            w(f"    put_longstr(out, m.{f.ident});")
        elif t == "table":
            w(f"    encode_table(out, m.{f.ident});")
    w("}")
    return o


def gen_source(methods):
    o = []
    w = o.append
    w("// Generated by net/amqp/spec/gen_codec.py from the AMQP 0-9-1 spec XML. Do not edit.")
    w('#include "net/amqp/methods.hpp"')
    w("")
    w('#include "net/amqp/wire.hpp"')
    w("")
    w("namespace sluice::amqp {")
    w("")
    w("namespace {")
    w("")
    w("// Reads a table (u32 length + body). A length that overruns the payload is")
    w("// `truncated`; anything wrong inside the declared length is `bad_table`.")
    w("[[maybe_unused]] bool read_table(WireReader& r, std::string_view args, FieldTable& t,")
    w("                                DecodeError& err) {")
    w("    const size_t start = r.position();")
    w("    const uint32_t n = r.u32();")
    w("    r.bytes(n);")
    w("    if (!r.ok()) {")
    w("        err = DecodeError::truncated;")
    w("        return false;")
    w("    }")
    w("    std::string_view in = args.substr(start, 4 + size_t(n));")
    w("    if (decode_table(in, t) != TableError::none || !in.empty()) {")
    w("        err = DecodeError::bad_table;")
    w("        return false;")
    w("    }")
    w("    return true;")
    w("}")
    w("")
    w("}  // namespace")
    w("")
    for m in methods:
        o.extend(gen_decoder(m))
        w("")
    for m in methods:
        o.extend(gen_encoder(m))
        w("")
    w("uint32_t peek_method_key(std::string_view payload) {")
    w("    if (payload.size() < 4) return 0;")
    w("    WireReader r(payload);")
    w("    return r.u32();")
    w("}")
    w("")
    w("DecodeError decode_method(std::string_view payload, Method& out) {")
    w("    DecodeError e = DecodeError::unknown_method;")
    w("    if (payload.size() < 4) {")
    w("        out.emplace<std::monostate>();")
    w("        return DecodeError::truncated;")
    w("    }")
    w("    const std::string_view args = payload.substr(4);")
    w("    switch (peek_method_key(payload)) {")
    for m in methods:
        w(f"    case method::{m.struct}::key:")
        w(f"        e = decode_arguments(args, out.emplace<method::{m.struct}>());")
        w("        break;")
    w("    default:")
    w("        break;")
    w("    }")
    w("    if (e != DecodeError::none) out.emplace<std::monostate>();")
    w("    return e;")
    w("}")
    w("")
    w("std::string_view method_name(uint32_t key) {")
    w("    switch (key) {")
    for m in methods:
        w(f"    case method::{m.struct}::key: return method::{m.struct}::name;")
    w("    default: return {};")
    w("    }")
    w("}")
    w("")
    w("bool method_has_content(uint32_t key) {")
    w("    switch (key) {")
    for m in methods:
        if m.has_content:
            w(f"    case method::{m.struct}::key:")
    w("        return true;")
    w("    default:")
    w("        return false;")
    w("    }")
    w("}")
    w("")
    w("void encode_method(std::string& out, const Method& m) {")
    w("    std::visit(")
    w("        [&out](const auto& x) {")
    w("            if constexpr (!std::is_same_v<std::decay_t<decltype(x)>, std::monostate>) encode(out, x);")
    w("        },")
    w("        m);")
    w("}")
    w("")
    w("}  // namespace sluice::amqp")
    return "\n".join(o) + "\n"


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--extensions")
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    methods = load(a.spec, a.extensions)
    os.makedirs(a.out_dir, exist_ok=True)
    write(os.path.join(a.out_dir, "methods.hpp"), gen_header(methods))
    write(os.path.join(a.out_dir, "methods.cpp"), gen_source(methods))


if __name__ == "__main__":
    main()
