use serde_json::{Value, json};

use super::*;

fn change(pointer: &str, code: &'static str, message: &str) -> Change {
    Change {
        pointer: pointer.to_owned(),
        code,
        message: message.to_owned(),
    }
}

#[track_caller]
fn compatible(writer: Value, reader: Value) {
    let changes = compare(&writer, &reader);
    assert!(changes.is_empty(), "expected compatible, got {changes:#?}");
}

/// The one change comparing finds.
#[track_caller]
fn only(writer: Value, reader: Value) -> Change {
    let mut changes = compare(&writer, &reader);
    assert_eq!(changes.len(), 1, "expected one change, got {changes:#?}");
    changes.remove(0)
}

#[track_caller]
fn codes(writer: Value, reader: Value) -> Vec<&'static str> {
    compare(&writer, &reader)
        .into_iter()
        .map(|c| c.code)
        .collect()
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn closed(properties: Value) -> Value {
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

// --- identity, metadata, booleans -----------------------------------------------------

#[test]
fn equal_schemas_are_compatible() {
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    compatible(schema.clone(), schema);
}

#[test]
fn metadata_only_changes_are_compatible() {
    let old = json!({
        "$id": "https://example.com/order/1",
        "title": "order",
        "type": "object",
        "properties": {"amount": {"type": "number", "description": "in cents", "default": 0}},
    });
    let new = json!({
        "$id": "https://example.com/order/2",
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "an order",
        "description": "placed by a customer",
        "$comment": "v2",
        "type": "object",
        "properties": {"amount": {
            "type": "number",
            "description": "in euro cents",
            "default": 1,
            "examples": [5],
            "deprecated": true,
        }},
    });
    compatible(old.clone(), new.clone());
    compatible(new, old);
}

#[test]
fn boolean_schemas() {
    // false writes nothing, so anything reads it.
    compatible(json!(false), json!({"type": "string"}));
    compatible(json!(false), json!(false));
    // true is {}.
    compatible(json!(true), json!({}));
    compatible(json!({}), json!(true));
    compatible(json!({"type": "string"}), json!(true));
    assert_eq!(
        only(json!(true), json!({"type": "string"})),
        change("/type", code::TYPE_ADDED, "type added (string)")
    );
    assert_eq!(
        only(json!({"type": "string"}), json!(false)),
        change(
            "",
            code::SCHEMA_FALSE,
            "schema is false, so no value is accepted"
        )
    );
    assert_eq!(
        only(
            object(json!({"note": {"type": "string"}})),
            object(json!({"note": false}))
        ),
        change(
            "/properties/note",
            code::SCHEMA_FALSE,
            "schema of \"note\" is false, so no value is accepted"
        )
    );
}

// --- properties -----------------------------------------------------------------------

#[test]
fn optional_property_added_to_an_open_model_is_incompatible() {
    let old = object(json!({"id": {"type": "string"}}));
    let new = object(json!({"id": {"type": "string"}, "note": {"type": "string"}}));
    assert_eq!(
        only(old.clone(), new.clone()),
        change(
            "/properties/note",
            code::PROPERTY_ADDED_TO_OPEN_MODEL,
            "property \"note\" added to an open content model"
        )
    );
    // The other way the property is removed from an open reader, which is fine.
    compatible(new, old);
}

#[test]
fn property_added_to_an_open_model_with_an_empty_schema_is_compatible() {
    let old = object(json!({"id": {"type": "string"}}));
    compatible(
        old.clone(),
        object(json!({"id": {"type": "string"}, "note": {}})),
    );
    compatible(
        old.clone(),
        object(json!({"id": {"type": "string"}, "note": true})),
    );
    compatible(
        old,
        object(json!({"id": {"type": "string"}, "note": {"description": "free text"}})),
    );
}

#[test]
fn optional_property_added_to_a_closed_model_is_compatible() {
    let old = closed(json!({"id": {"type": "string"}}));
    let new = closed(json!({"id": {"type": "string"}, "note": {"type": "string"}}));
    compatible(old.clone(), new.clone());
    // The other way it is removed from a closed reader.
    assert_eq!(
        only(new, old),
        change(
            "/properties/note",
            code::PROPERTY_REMOVED_FROM_CLOSED_MODEL,
            "property \"note\" removed from a closed content model (additionalProperties: false)"
        )
    );
}

#[test]
fn property_removed_from_an_open_model_is_compatible() {
    let old = object(json!({"id": {"type": "string"}, "note": {"type": "string"}}));
    compatible(old, object(json!({"id": {"type": "string"}})));
}

#[test]
fn property_against_a_partially_open_model_compares_with_its_schema() {
    fn partial(props: Value) -> Value {
        json!({"type": "object", "properties": props, "additionalProperties": {"type": "string"}})
    }
    // Added: the writer's extra properties were strings.
    compatible(
        partial(json!({})),
        partial(json!({"note": {"type": "string", "description": "x"}})),
    );
    assert_eq!(
        only(
            partial(json!({})),
            partial(json!({"note": {"type": "integer"}}))
        ),
        change(
            "/properties/note/type",
            code::TYPE_NARROWED,
            "type of \"note\" narrowed from string to integer"
        )
    );
    // Removed: the writer's property must fit the reader's extra-property schema.
    compatible(
        partial(json!({"note": {"type": "string", "maxLength": 5}})),
        partial(json!({})),
    );
    assert_eq!(
        only(
            partial(json!({"count": {"type": "integer"}})),
            partial(json!({}))
        ),
        change(
            "/additionalProperties/type",
            code::TYPE_NARROWED,
            "type of \"count\" narrowed from integer to string"
        )
    );
}

#[test]
fn property_removed_where_unevaluated_properties_applies_is_reported() {
    let old = json!({"properties": {"a": {}, "b": {}}, "unevaluatedProperties": false});
    let new = json!({"properties": {"a": {}}, "unevaluatedProperties": false});
    assert_eq!(only(old, new).code, code::KEYWORD_CHANGED);
}

#[test]
fn property_names_are_escaped_in_pointers() {
    let old = closed(json!({"a/b~c": {"type": "number"}}));
    let new = closed(json!({"a/b~c": {"type": "integer"}}));
    assert_eq!(only(old, new).pointer, "/properties/a~1b~0c/type");
}

#[test]
fn nested_property_change_is_reported_at_its_nested_pointer() {
    let old =
        object(json!({"customer": object(json!({"email": {"type": "string", "maxLength": 200}}))}));
    let new =
        object(json!({"customer": object(json!({"email": {"type": "string", "maxLength": 100}}))}));
    assert_eq!(
        only(old.clone(), new.clone()),
        change(
            "/properties/customer/properties/email/maxLength",
            code::BOUND_TIGHTENED,
            "maxLength of \"email\" tightened from 200 to 100"
        )
    );
    compatible(new, old);
}

// --- required ---------------------------------------------------------------------------

#[test]
fn required_added_is_incompatible_and_removed_is_not() {
    let old = json!({
        "type": "object",
        "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
    });
    let mut new = old.clone();
    new["required"] = json!(["currency"]);
    assert_eq!(
        only(old.clone(), new.clone()),
        change(
            "/required",
            code::REQUIRED_ADDED,
            "required property \"currency\" added"
        )
    );
    compatible(new, old);
}

#[test]
fn required_added_with_a_default_is_still_incompatible() {
    // Confluent excuses it; a validator does not fill the default in, so an older event
    // without the property would be refused.
    let old = object(json!({"currency": {"type": "string"}}));
    let new = json!({
        "type": "object",
        "properties": {"currency": {"type": "string", "default": "EUR"}},
        "required": ["currency"],
    });
    assert_eq!(
        only(old, new),
        change(
            "/required",
            code::REQUIRED_ADDED,
            "required property \"currency\" added"
        )
    );
}

#[test]
fn required_added_in_a_nested_object_names_its_parent() {
    let address = |required: Value| {
        object(json!({"address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": required,
        }}))
    };
    assert_eq!(
        only(address(json!([])), address(json!(["city"]))),
        change(
            "/properties/address/required",
            code::REQUIRED_ADDED,
            "required property \"city\" added to \"address\""
        )
    );
}

#[test]
fn dependent_required_added_is_incompatible_and_removed_is_not() {
    let plain = object(json!({"card": {}, "cvc": {}}));
    let mut dependent = plain.clone();
    dependent["dependentRequired"] = json!({"card": ["cvc"]});
    assert_eq!(
        only(plain.clone(), dependent.clone()),
        change(
            "/dependentRequired/card",
            code::REQUIRED_ADDED,
            "property \"cvc\" now required when \"card\" is present"
        )
    );
    compatible(dependent, plain);
}

// --- type -------------------------------------------------------------------------------

#[test]
fn type_narrowed_from_number_to_integer_is_incompatible() {
    let old = object(json!({"amount": {"type": "number"}}));
    let new = object(json!({"amount": {"type": "integer"}}));
    assert_eq!(
        only(old.clone(), new.clone()),
        change(
            "/properties/amount/type",
            code::TYPE_NARROWED,
            "type of \"amount\" narrowed from number to integer"
        )
    );
    // integer→number widens.
    compatible(new, old);
}

#[test]
fn type_list_narrowed_and_widened() {
    let nullable = json!({"type": ["string", "null"]});
    let string = json!({"type": "string"});
    assert_eq!(
        only(nullable.clone(), string.clone()),
        change(
            "/type",
            code::TYPE_NARROWED,
            "type narrowed from [string, null] to string"
        )
    );
    compatible(string, nullable);
}

#[test]
fn type_added_where_there_was_none_is_incompatible() {
    assert_eq!(
        only(json!({}), json!({"type": "object"})).code,
        code::TYPE_ADDED
    );
    // A writer's enum implies its values' types.
    compatible(json!({"enum": ["a", "b"]}), json!({"type": "string"}));
    assert_eq!(
        only(json!({"enum": ["a", 1]}), json!({"type": "string"})).code,
        code::TYPE_NARROWED
    );
}

#[test]
fn keywords_for_another_type_than_the_writer_has_do_not_matter() {
    compatible(
        json!({"type": "string"}),
        json!({"type": "string", "minProperties": 2, "minimum": 3}),
    );
    assert_eq!(
        codes(json!({}), json!({"minProperties": 2})),
        [code::BOUND_ADDED]
    );
}

// --- enum and const ---------------------------------------------------------------------

#[test]
fn enum_extended_is_compatible_and_narrowed_is_not() {
    let old = object(json!({"currency": {"enum": ["EUR", "USD", "GBP"]}}));
    let new = object(json!({"currency": {"enum": ["EUR", "USD", "GBP", "JPY"]}}));
    compatible(old.clone(), new.clone());
    assert_eq!(
        only(new, old),
        change(
            "/properties/currency/enum",
            code::ENUM_NARROWED,
            "enum of \"currency\" narrowed: \"JPY\" no longer allowed"
        )
    );
}

#[test]
fn enum_added_is_incompatible_and_removed_is_not() {
    let old = object(json!({"currency": {"type": "string"}}));
    let new = object(json!({"currency": {"type": "string", "enum": ["EUR", "USD"]}}));
    assert_eq!(
        only(old.clone(), new.clone()),
        change(
            "/properties/currency/enum",
            code::ENUM_ADDED,
            "enum of \"currency\" added (only \"EUR\", \"USD\" allowed)"
        )
    );
    compatible(new, old);
}

#[test]
fn enum_values_compare_as_json_schema_numbers() {
    compatible(json!({"enum": [1, 2]}), json!({"enum": [1.0, 2.0, 3]}));
}

#[test]
fn const_rules() {
    compatible(json!({"const": "EUR"}), json!({"enum": ["EUR", "USD"]}));
    compatible(json!({"enum": ["EUR"]}), json!({"const": "EUR"}));
    assert_eq!(
        only(json!({"const": "EUR"}), json!({"enum": ["USD"]})),
        change(
            "/enum",
            code::ENUM_NARROWED,
            "enum narrowed: \"EUR\" no longer allowed"
        )
    );
    assert_eq!(
        only(json!({"const": "EUR"}), json!({"const": "USD"})),
        change(
            "/const",
            code::CONST_CHANGED,
            "const changed from \"EUR\" to \"USD\""
        )
    );
    assert_eq!(
        only(
            json!({"type": "string"}),
            json!({"type": "string", "const": "USD"})
        ),
        change("/const", code::CONST_CHANGED, "const added (\"USD\")")
    );
}

// --- bounds -----------------------------------------------------------------------------

#[test]
fn length_bounds_tightened_added_loosened_removed() {
    let with = |bounds: Value| {
        let mut schema = json!({"type": "string"});
        schema
            .as_object_mut()
            .unwrap()
            .extend(bounds.as_object().unwrap().clone());
        schema
    };
    assert_eq!(
        only(
            with(json!({"maxLength": 10})),
            with(json!({"maxLength": 5}))
        ),
        change(
            "/maxLength",
            code::BOUND_TIGHTENED,
            "maxLength tightened from 10 to 5"
        )
    );
    assert_eq!(
        only(with(json!({})), with(json!({"minLength": 1}))),
        change("/minLength", code::BOUND_ADDED, "minLength added (1)")
    );
    compatible(
        with(json!({"maxLength": 5})),
        with(json!({"maxLength": 10})),
    );
    compatible(with(json!({"minLength": 3})), with(json!({"minLength": 1})));
    compatible(
        with(json!({"minLength": 3, "maxLength": 5})),
        with(json!({})),
    );
    // minLength 0 is no bound at all.
    compatible(with(json!({})), with(json!({"minLength": 0})));
}

#[test]
fn numeric_bounds_tightened_added_loosened_removed() {
    let amount = |bounds: Value| {
        let mut amount = json!({"type": "number"});
        amount
            .as_object_mut()
            .unwrap()
            .extend(bounds.as_object().unwrap().clone());
        object(json!({"amount": amount}))
    };
    assert_eq!(
        only(amount(json!({"minimum": 0})), amount(json!({"minimum": 1}))),
        change(
            "/properties/amount/minimum",
            code::BOUND_TIGHTENED,
            "minimum of \"amount\" tightened from 0 to 1"
        )
    );
    assert_eq!(
        only(amount(json!({})), amount(json!({"maximum": 100}))),
        change(
            "/properties/amount/maximum",
            code::BOUND_ADDED,
            "maximum of \"amount\" added (100)"
        )
    );
    compatible(
        amount(json!({"minimum": 1, "maximum": 10})),
        amount(json!({"minimum": 0, "maximum": 20.5})),
    );
    compatible(
        amount(json!({"minimum": 1, "maximum": 10})),
        amount(json!({})),
    );
    // An exclusive bound at the same number admits less; trading it for an inclusive one
    // admits more.
    compatible(
        amount(json!({"exclusiveMinimum": 0})),
        amount(json!({"minimum": 0})),
    );
    assert_eq!(
        only(
            amount(json!({"minimum": 0})),
            amount(json!({"exclusiveMinimum": 0}))
        ),
        change(
            "/properties/amount/exclusiveMinimum",
            code::BOUND_TIGHTENED,
            "lower bound of \"amount\" tightened from minimum 0 to exclusiveMinimum 0"
        )
    );
}

#[test]
fn array_and_object_count_bounds() {
    assert_eq!(
        only(
            json!({"type": "array", "maxItems": 5}),
            json!({"type": "array", "maxItems": 3})
        )
        .code,
        code::BOUND_TIGHTENED
    );
    compatible(
        json!({"type": "array", "minItems": 2}),
        json!({"type": "array", "minItems": 1}),
    );
    assert_eq!(
        only(
            json!({"type": "object"}),
            json!({"type": "object", "minProperties": 1})
        )
        .code,
        code::BOUND_ADDED
    );
}

#[test]
fn multiple_of() {
    assert_eq!(
        only(
            json!({"type": "number"}),
            json!({"type": "number", "multipleOf": 0.01})
        ),
        change(
            "/multipleOf",
            code::MULTIPLE_OF_CHANGED,
            "multipleOf added (0.01)"
        )
    );
    compatible(
        json!({"type": "number", "multipleOf": 0.1}),
        json!({"type": "number", "multipleOf": 0.05}),
    );
    compatible(
        json!({"type": "number", "multipleOf": 10}),
        json!({"type": "number", "multipleOf": 5}),
    );
    assert_eq!(
        only(
            json!({"type": "number", "multipleOf": 5}),
            json!({"type": "number", "multipleOf": 10})
        )
        .code,
        code::MULTIPLE_OF_CHANGED
    );
    // Integers are already multiples of 1.
    compatible(
        json!({"type": "integer"}),
        json!({"type": "integer", "multipleOf": 1}),
    );
}

#[test]
fn unique_items_added_is_incompatible_and_removed_is_not() {
    let plain = json!({"type": "array", "items": {"type": "string"}});
    let unique = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
    assert_eq!(
        only(plain.clone(), unique.clone()),
        change(
            "/uniqueItems",
            code::UNIQUE_ITEMS_ADDED,
            "uniqueItems added"
        )
    );
    compatible(unique, plain);
}

// --- pattern and format -----------------------------------------------------------------

#[test]
fn pattern_added_or_changed_is_incompatible_and_removed_is_not() {
    let plain = object(json!({"sku": {"type": "string"}}));
    let patterned = object(json!({"sku": {"type": "string", "pattern": "^[A-Z]+$"}}));
    assert_eq!(
        only(plain.clone(), patterned.clone()),
        change(
            "/properties/sku/pattern",
            code::PATTERN_CHANGED,
            "pattern of \"sku\" added (\"^[A-Z]+$\")"
        )
    );
    compatible(patterned.clone(), plain);
    let other = object(json!({"sku": {"type": "string", "pattern": "^[A-Z0-9]+$"}}));
    assert_eq!(only(patterned, other).code, code::PATTERN_CHANGED);
}

#[test]
fn format_added_or_changed_is_incompatible_and_removed_is_not() {
    assert_eq!(
        only(
            json!({"type": "string", "format": "date"}),
            json!({"type": "string", "format": "date-time"})
        ),
        change(
            "/format",
            code::FORMAT_CHANGED,
            "format changed from \"date\" to \"date-time\""
        )
    );
    compatible(
        json!({"type": "string", "format": "email"}),
        json!({"type": "string"}),
    );
}

// --- additionalProperties ---------------------------------------------------------------

#[test]
fn additional_properties_opened_is_compatible_and_closed_is_not() {
    let open = json!({"type": "object", "additionalProperties": true});
    let shut = json!({"type": "object", "additionalProperties": false});
    compatible(shut.clone(), open.clone());
    assert_eq!(
        only(open, shut),
        change(
            "/additionalProperties",
            code::ADDITIONAL_PROPERTIES_NARROWED,
            "additional properties no longer allowed (additionalProperties: false)"
        )
    );
}

#[test]
fn additional_properties_schemas() {
    let open = json!({"type": "object"});
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let short =
        json!({"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}});
    assert_eq!(
        only(open.clone(), strings.clone()),
        change(
            "/additionalProperties",
            code::ADDITIONAL_PROPERTIES_NARROWED,
            "additional properties narrowed from any value to a schema"
        )
    );
    compatible(strings.clone(), open);
    compatible(short.clone(), strings.clone());
    assert_eq!(
        only(strings, short),
        change(
            "/additionalProperties/maxLength",
            code::BOUND_ADDED,
            "maxLength of additional properties added (5)"
        )
    );
}

// --- arrays -----------------------------------------------------------------------------

#[test]
fn items_are_compared() {
    let tags = |items: Value| object(json!({"tags": {"type": "array", "items": items}}));
    assert_eq!(
        only(
            tags(json!({"type": "number"})),
            tags(json!({"type": "integer"}))
        ),
        change(
            "/properties/tags/items/type",
            code::TYPE_NARROWED,
            "type of items of \"tags\" narrowed from number to integer"
        )
    );
    compatible(
        tags(json!({"type": "integer"})),
        tags(json!({"type": "number"})),
    );
}

#[test]
fn prefix_items_are_compared_by_position() {
    let (string, integer) = (json!({"type": "string"}), json!({"type": "integer"}));
    let pair = json!({"type": "array", "prefixItems": [string, integer], "items": false});
    let longer = json!({"type": "array", "prefixItems": [string, integer, string], "items": false});
    // The writer wrote no third item; the reader allows one.
    compatible(pair.clone(), longer.clone());
    // The writer may write a third item; the reader allows none.
    assert_eq!(
        only(longer, pair),
        change(
            "/items",
            code::SCHEMA_FALSE,
            "schema of item 2 is false, so no value is accepted"
        )
    );
    let wider = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]});
    compatible(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}),
        wider.clone(),
    );
    assert_eq!(
        only(
            wider,
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]})
        )
        .pointer,
        "/prefixItems/1/type"
    );
}

// --- combinators ------------------------------------------------------------------------

#[test]
fn any_of_gaining_a_branch_is_compatible_and_losing_one_is_not() {
    let two = object(json!({"id": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}));
    let three = object(
        json!({"id": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}}),
    );
    compatible(two.clone(), three.clone());
    assert_eq!(
        only(three, two),
        change(
            "/properties/id/anyOf",
            code::COMBINATOR_NARROWED,
            "anyOf branch 2 of \"id\" no longer matched by any anyOf branch (nearest, branch 0: \
             type of \"id\" narrowed from null to string at /properties/id/anyOf/0/type)"
        )
    );
}

#[test]
fn one_of_gaining_a_branch_is_compatible_and_losing_one_is_not() {
    let two = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
    let one = json!({"oneOf": [{"type": "string"}]});
    compatible(one.clone(), two.clone());
    assert_eq!(
        only(two, one),
        change(
            "/oneOf",
            code::COMBINATOR_NARROWED,
            "oneOf branch 1 no longer matched by any oneOf branch (nearest, branch 0: \
             type narrowed from integer to string at /oneOf/0/type)"
        )
    );
}

#[test]
fn a_schema_becoming_an_any_of_that_includes_it_is_compatible() {
    let string = object(json!({"note": {"type": "string"}}));
    let nullable = object(json!({"note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}));
    compatible(string.clone(), nullable.clone());
    // Back to one branch: the lost branch's value is what no longer fits.
    assert_eq!(
        only(nullable, string),
        change(
            "/properties/note/type",
            code::TYPE_NARROWED,
            "type of \"note\" narrowed from null to string"
        )
    );
    assert_eq!(
        only(
            json!({"type": "boolean"}),
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]})
        ),
        change(
            "/anyOf",
            code::COMBINATOR_NARROWED,
            "the value no longer matched by any anyOf branch (nearest, branch 0: \
             type narrowed from boolean to string at /anyOf/0/type)"
        )
    );
}

#[test]
fn keywords_beside_a_writer_any_of_apply_to_each_branch() {
    let old = json!({"type": "string", "anyOf": [{"maxLength": 5}, {"pattern": "^a"}]});
    let new = json!({"anyOf": [
        {"type": "string", "maxLength": 5},
        {"type": "string", "pattern": "^a"},
        {"type": "null"},
    ]});
    compatible(old, new);
}

#[test]
fn all_of_losing_a_branch_is_compatible_and_gaining_one_is_not() {
    let base = json!({"type": "object", "properties": {"id": {"type": "string"}}});
    let extra = json!({"required": ["id"]});
    let both = json!({"allOf": [base.clone(), extra]});
    let one = json!({"allOf": [base]});
    compatible(both.clone(), one.clone());
    assert_eq!(
        only(one, both),
        change(
            "/allOf/1/required",
            code::REQUIRED_ADDED,
            "required property \"id\" added"
        )
    );
}

#[test]
fn all_of_branch_implied_by_the_writer_is_compatible() {
    compatible(
        json!({"type": "string", "maxLength": 5}),
        json!({"allOf": [{"type": "string"}, {"maxLength": 10}]}),
    );
}

#[test]
fn not_changed_is_reported_and_removed_is_not() {
    let with = json!({"type": "string", "not": {"const": "x"}});
    let other = json!({"type": "string", "not": {"const": "y"}});
    let without = json!({"type": "string"});
    assert_eq!(
        only(with.clone(), other),
        change(
            "/not",
            code::KEYWORD_CHANGED,
            "keyword \"not\" changed; weir cannot prove that compatible"
        )
    );
    compatible(with.clone(), without.clone());
    assert_eq!(only(without, with).code, code::KEYWORD_CHANGED);
}

#[test]
fn other_keywords_changed_are_reported_conservatively() {
    let plain = json!({"type": "object"});
    let patterned = json!({"type": "object", "patternProperties": {"^x-": {"type": "string"}}});
    assert_eq!(
        only(plain.clone(), patterned.clone()),
        change(
            "/patternProperties",
            code::KEYWORD_CHANGED,
            "keyword \"patternProperties\" added; weir cannot prove that compatible"
        )
    );
    assert_eq!(only(patterned, plain).code, code::KEYWORD_CHANGED);
    let conditional =
        json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}});
    compatible(conditional, json!({"type": "object"}));
}

// --- $ref -------------------------------------------------------------------------------

fn with_money(amount_type: &str) -> Value {
    json!({
        "type": "object",
        "properties": {"price": {"$ref": "#/$defs/Money"}, "tax": {"$ref": "#/$defs/Money"}},
        "$defs": {"Money": {"type": "object", "properties": {"amount": {"type": amount_type}}}},
    })
}

#[test]
fn a_change_inside_defs_is_caught_through_the_ref() {
    assert_eq!(
        compare(&with_money("number"), &with_money("integer")),
        [change(
            "/$defs/Money/properties/amount/type",
            code::TYPE_NARROWED,
            "type of \"amount\" narrowed from number to integer"
        )]
    );
    compatible(with_money("integer"), with_money("number"));
}

#[test]
fn a_ref_and_the_schema_it_names_are_interchangeable() {
    let money = json!({"type": "object", "properties": {"amount": {"type": "number"}}});
    let inline = json!({"type": "object", "properties": {"price": money}});
    let by_ref = json!({
        "type": "object",
        "properties": {"price": {"$ref": "#/$defs/Money"}},
        "$defs": {"Money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
    });
    compatible(inline.clone(), by_ref.clone());
    compatible(by_ref, inline);
}

#[test]
fn a_ref_beside_other_keywords_applies_both() {
    let old = json!({
        "properties": {"price": {"$ref": "#/$defs/Money", "required": ["amount"]}},
        "$defs": {"Money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
    });
    let mut new = old.clone();
    new["$defs"]["Money"]["properties"]["amount"]["type"] = json!("integer");
    assert_eq!(
        only(old.clone(), new).pointer,
        "/$defs/Money/properties/amount/type"
    );
    let mut stricter = old.clone();
    stricter["properties"]["price"]["required"] = json!(["amount", "currency"]);
    assert_eq!(only(old, stricter).pointer, "/properties/price/required");
}

#[test]
fn a_recursive_ref_does_not_loop() {
    let tree = |label_type: &str| {
        json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {
                "type": "object",
                "properties": {
                    "label": {"type": label_type},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
            }},
        })
    };
    compatible(tree("string"), tree("string"));
    let mut retitled = tree("string");
    retitled["title"] = json!("a tree");
    compatible(tree("string"), retitled);
    assert_eq!(
        compare(&tree("number"), &tree("integer")),
        [change(
            "/$defs/Node/properties/label/type",
            code::TYPE_NARROWED,
            "type of \"label\" narrowed from number to integer"
        )]
    );
    // The root itself as the target.
    let list = |max: u32| {
        let value = json!({"type": "string", "maxLength": max});
        json!({"type": "object", "properties": {"next": {"$ref": "#"}, "value": value}})
    };
    compatible(list(5), list(10));
    assert_eq!(
        only(list(10), list(5)).pointer,
        "/properties/value/maxLength"
    );
}

#[test]
fn a_ref_to_itself_does_not_loop() {
    let odd = json!({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}});
    let mut other = odd.clone();
    other["title"] = json!("x");
    compatible(odd, other);
}

#[test]
fn remote_refs_must_stay_the_same() {
    let money = json!({"properties": {"price": {"$ref": "https://example.com/money.json"}}});
    let other = json!({"properties": {"price": {"$ref": "https://example.com/money-v2.json"}}});
    let mut retitled = money.clone();
    retitled["title"] = json!("priced");
    compatible(money.clone(), retitled);
    assert_eq!(
        only(money, other),
        change(
            "/properties/price/$ref",
            code::REFERENCE_CHANGED,
            "reference of \"price\" changed from \"https://example.com/money.json\" to \
             \"https://example.com/money-v2.json\""
        )
    );
}

// --- check ------------------------------------------------------------------------------

/// v1 → v2 adds an optional property "note". Open models: old readers ignore it, but new
/// readers may not read old data (which may hold any "note"). Closed: the other way round.
fn versions(open: bool) -> (Value, Value) {
    let make = |props: Value| if open { object(props) } else { closed(props) };
    (
        make(json!({"id": {"type": "string"}})),
        make(json!({"id": {"type": "string"}, "note": {"type": "string"}})),
    )
}

#[test]
fn check_backward() {
    let (v1, v2) = versions(true);
    let found = check(Compatibility::Backward, &[(1, &v1)], &v2);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (1, Direction::Backward)
    );
    assert_eq!(found[0].changes[0].code, code::PROPERTY_ADDED_TO_OPEN_MODEL);
    let (v1, v2) = versions(false);
    assert_eq!(check(Compatibility::Backward, &[(1, &v1)], &v2), []);
}

#[test]
fn check_forward() {
    let (v1, v2) = versions(true);
    assert_eq!(check(Compatibility::Forward, &[(1, &v1)], &v2), []);
    let (v1, v2) = versions(false);
    let found = check(Compatibility::Forward, &[(1, &v1)], &v2);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (1, Direction::Forward)
    );
    assert_eq!(
        found[0].changes[0].code,
        code::PROPERTY_REMOVED_FROM_CLOSED_MODEL
    );
}

#[test]
fn check_full_checks_both_ways() {
    for open in [true, false] {
        let (v1, v2) = versions(open);
        let found = check(Compatibility::Full, &[(1, &v1)], &v2);
        let expected = if open {
            Direction::Backward
        } else {
            Direction::Forward
        };
        assert_eq!(
            found.iter().map(|i| i.direction).collect::<Vec<_>>(),
            [expected],
            "open: {open}"
        );
        assert_eq!(
            check(Compatibility::FullTransitive, &[(1, &v1)], &v2).len(),
            1
        );
    }
    // Both ways at once.
    let old = json!({"type": "number"});
    let new = json!({"type": "string"});
    let found = check(Compatibility::Full, &[(1, &old)], &new);
    assert_eq!(
        found.iter().map(|i| i.direction).collect::<Vec<_>>(),
        [Direction::Backward, Direction::Forward]
    );
}

#[test]
fn transitive_modes_catch_a_break_with_an_older_version() {
    // v2 dropped integers (registered under another mode); v3 agrees with v2 but cannot
    // read v1's data.
    let v1 = json!({"type": ["string", "integer"]});
    let v2 = json!({"type": "string"});
    let v3 = json!({"type": "string", "description": "v3"});
    let earlier = [(1, &v1), (2, &v2)];
    assert_eq!(check(Compatibility::Backward, &earlier, &v3), []);
    let found = check(Compatibility::BackwardTransitive, &earlier, &v3);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (1, Direction::Backward)
    );
    // Forward: v1 reads v3's strings, so forward-transitive is fine here ...
    assert_eq!(check(Compatibility::ForwardTransitive, &earlier, &v3), []);
    // ... but not once v3 writes what only v2 allowed.
    let (v1, v2) = (
        json!({"type": "string"}),
        json!({"type": ["string", "null"]}),
    );
    let v3 = json!({"type": ["string", "null"], "title": "v3"});
    let earlier = [(1, &v1), (2, &v2)];
    assert_eq!(check(Compatibility::Forward, &earlier, &v3), []);
    let found = check(Compatibility::ForwardTransitive, &earlier, &v3);
    assert_eq!(
        found
            .iter()
            .map(|i| (i.version, i.direction))
            .collect::<Vec<_>>(),
        [(1, Direction::Forward)]
    );
}

#[test]
fn check_none_checks_nothing_and_no_earlier_version_is_compatible() {
    let old = json!({"type": "number"});
    let new = json!({"type": "string"});
    assert_eq!(check(Compatibility::None, &[(1, &old)], &new), []);
    for mode in Compatibility::ALL {
        assert_eq!(check(mode, &[], &new), [], "{mode}");
    }
}

#[test]
fn incompatibility_display() {
    let old = json!({
        "type": "object",
        "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
    });
    let new = json!({
        "type": "object",
        "properties": {"amount": {"type": "integer"}, "currency": {"type": "string"}},
        "required": ["currency"],
    });
    let found = check(Compatibility::Backward, &[(1, &old), (2, &old)], &new);
    assert_eq!(found.len(), 1);
    let forward = check(Compatibility::Forward, &[(1, &new)], &old);
    assert!(
        forward[0]
            .to_string()
            .starts_with("not forward compatible with version 1 (it cannot read the new version's events; as version 1 sees them"),
        "{}",
        forward[0]
    );
    assert_eq!(
        found[0].to_string(),
        "not backward compatible with version 2 (the new version cannot read its events): \
         type of \"amount\" narrowed from number to integer at \
         /properties/amount/type; required property \"currency\" added at /required"
    );
    assert_eq!(
        change(
            "",
            code::SCHEMA_FALSE,
            "schema is false, so no value is accepted"
        )
        .to_string(),
        "schema is false, so no value is accepted at /"
    );
}

#[test]
fn incompatibility_serializes() {
    let incompatibility = Incompatibility {
        version: 3,
        direction: Direction::Forward,
        changes: vec![change(
            "/required",
            code::REQUIRED_ADDED,
            "required property \"a\" added",
        )],
    };
    assert_eq!(
        serde_json::to_value(&incompatibility).unwrap(),
        json!({
            "version": 3,
            "direction": "forward",
            "changes": [{
                "pointer": "/required",
                "code": "required-added",
                "message": "required property \"a\" added",
            }],
        })
    );
}

// --- Compatibility ----------------------------------------------------------------------

#[test]
fn compatibility_names_round_trip() {
    assert_eq!(Compatibility::default(), Compatibility::Backward);
    for mode in Compatibility::ALL {
        assert_eq!(mode.as_str().parse::<Compatibility>(), Ok(mode));
        assert_eq!(serde_json::to_value(mode).unwrap(), json!(mode.as_str()));
        assert_eq!(
            serde_json::from_value::<Compatibility>(json!(mode.as_str())).unwrap(),
            mode
        );
    }
    assert_eq!(Compatibility::FullTransitive.as_str(), "full_transitive");
    let err = "BACKWARD".parse::<Compatibility>().unwrap_err();
    assert_eq!(
        err,
        "unknown compatibility \"BACKWARD\": expected one of \
         none, backward, backward_transitive, forward, \
         forward_transitive, full, full_transitive"
    );
}

#[test]
fn every_reported_code_is_in_the_closed_set() {
    let pairs = [
        (json!({}), json!(false)),
        (
            json!({}),
            json!({
                "type": "string",
                "enum": ["a"],
                "const": "a",
                "minLength": 1,
                "pattern": "a",
                "format": "email",
            }),
        ),
        (
            json!({"type": "number"}),
            json!({"type": "integer", "multipleOf": 2, "maximum": 3}),
        ),
        (
            json!({"maxItems": 3}),
            json!({"maxItems": 2, "uniqueItems": true, "contains": {}}),
        ),
        (
            object(json!({"a": {}})),
            closed(json!({"b": {"type": "string"}})),
        ),
        (
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"anyOf": [{"type": "string"}], "$ref": "x.json"}),
        ),
    ];
    for (writer, reader) in pairs {
        for change in compare(&writer, &reader) {
            assert!(code::ALL.contains(&change.code), "{change:?}");
            assert!(
                !change.message.starts_with(char::is_uppercase),
                "{change:?}"
            );
            assert!(!change.message.ends_with('.'), "{change:?}");
        }
    }
}

#[test]
fn a_change_behind_a_ref_in_an_any_of_branch_is_caught() {
    fn nullable(t: &str) -> Value {
        json!({"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}], "$defs": {"A": {"type": t}}})
    }
    compatible(nullable("integer"), nullable("number"));
    assert_eq!(
        only(nullable("number"), nullable("integer")),
        change(
            "/anyOf",
            code::COMBINATOR_NARROWED,
            "anyOf branch 0 no longer matched by any anyOf branch (nearest, branch 0: \
             type narrowed from number to integer at /$defs/A/type)"
        )
    );
}

#[test]
fn a_schema_too_complex_to_compare_is_reported_not_compared_for_ever() {
    // Each level holds the one below twice: 2^11 leaves, and nested anyOfs on both sides.
    let nest = |leaf: &str| {
        let mut schema = json!({"type": leaf});
        for i in 0..11 {
            let inner = json!({"type": "object", "properties": {format!("p{i}"): schema.clone()}});
            schema = json!({"anyOf": [schema, inner]});
        }
        schema
    };
    let changes = compare(&nest("number"), &nest("integer"));
    assert!(
        changes.contains(&change(
            "",
            code::KEYWORD_CHANGED,
            "schema too complex for weir to compare"
        )),
        "{changes:#?}"
    );
    // The same schema is compared at once, however large.
    let mut retitled = nest("number");
    retitled["title"] = json!("x");
    compatible(nest("number"), retitled);
}
