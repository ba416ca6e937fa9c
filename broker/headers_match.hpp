// Headers-exchange matching, as RabbitMQ 4.x does it
// (rabbit_exchange_type_headers.erl, with message headers prepared by
// mc_amqpl:routing_headers/2 and decoded by rabbit_binary_parser.erl).
//
// Rules, beyond the obvious:
//   * x-match is looked up as the FIRST "x-match" entry of the binding; only a
//     long string 'S' selects a mode; anything else (absent, another type, an
//     unknown word that slipped past validation) means "all".
//   * all/any skip every binding key starting with "x-"; all-with-x/any-with-x
//     skip only "x-match" itself. "any" with no key left to test is false, "all"
//     with none is true (so x-match=all and nothing else matches every message).
//   * A binding value of type void ('V') matches when the header is present,
//     whatever its value (void included).
//   * Otherwise values compare as Erlang terms with =:= after decoding, which
//     ignores the wire type at the top level:
//       - every integer width is the same (int8 1 == uint32 1 == int64 1);
//       - an integer never equals a float/double (1 != 1.0), a float 'f' equals a
//         double 'd' of the same value (the float widened), and 0.0 != -0.0
//         (Erlang/OTP 27 =:=);
//       - 'S' and 'x' are both binaries, so equal bytes match across the two;
//       - a string never equals a number ("1" != 1), a bool is only a bool;
//       - decimals compare as (scale, value) pairs: 1.0 (1,10) != 1 (0,1);
//       - a timestamp 'T' is an integer too, but a message header of type
//         timestamp is routed as MILLISECONDS (mc_amqpl:routing_value multiplies
//         it by 1000) while binding values are not converted: a header timestamp
//         T matches a binding integer or timestamp T*1000 and NOT a binding
//         timestamp T (unless T is 0); a binding timestamp N matches a header
//         integer N;
//       - nested tables 'F' and arrays 'A' compare element by element in wire
//         order WITH their types (int8 1 != int32 1 inside), and an empty table
//         equals an empty array (both are the empty list).
//   * A message header name appearing twice: the LAST occurrence is the one
//     matched (the headers are folded into a map).
#pragma once

#include <string>

#include "net/amqp/field_table.hpp"

namespace sluice::broker {

// RabbitMQ's headers exchange: binding arguments x-match = all (default) | any | all-with-x | any-with-x.
// Binding keys starting with "x-" are not matched except with the *-with-x variants (x-match itself never).
// message_headers may be null (no headers).
bool headers_match(const amqp::FieldTable& binding_args, const amqp::FieldTable* message_headers);

// Validates x-match at bind time: returns an error text if x-match has an invalid value (RabbitMQ answers 406),
// else "". Absent x-match is valid (it means "all").
std::string validate_headers_binding(const amqp::FieldTable& binding_args);

// The name RabbitMQ's error texts give a field value's type: "longstr",
// "signedint", "table", ...
const char* erlang_type_name(const amqp::FieldValue& v);

}  // namespace sluice::broker
