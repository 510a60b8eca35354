; Tags query for Go, read by sleepy_repo.parse.parser.
; Capture names are documented at the top of python-tags.scm:
;   @definition.<kind> / @name.definition.<kind> / @body, @receiver (method owner type),
;   @name.reference.call, @import.statement / @import.module.
; A `type X ...` declaration with a single spec is captured whole (so the signature keeps
; the `type` keyword); specs of a grouped `type ( ... )` are captured one by one.

(function_declaration
  name: (identifier) @name.definition.function
  body: (block) @body) @definition.function

(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [
        (type_identifier) @receiver
        (pointer_type (type_identifier) @receiver)
        (generic_type type: (type_identifier) @receiver)
        (pointer_type (generic_type type: (type_identifier) @receiver))
      ]))
  name: (field_identifier) @name.definition.method
  body: (block) @body) @definition.method

; single-spec type declarations
(type_declaration .
  (type_spec
    name: (type_identifier) @name.definition.struct
    type: (struct_type (field_declaration_list) @body)) .) @definition.struct

(type_declaration .
  (type_spec
    name: (type_identifier) @name.definition.interface
    type: (interface_type . (_)? @body)) .) @definition.interface

(type_declaration .
  (type_spec
    name: (type_identifier) @name.definition.type
    type: [
      (type_identifier) (qualified_type) (generic_type) (pointer_type) (function_type)
      (map_type) (slice_type) (array_type) (channel_type)
    ]) .) @definition.type

(type_declaration . (type_alias name: (type_identifier) @name.definition.type) .) @definition.type

; specs of grouped declarations (duplicates of the above are dropped by the parser)
(type_spec
  name: (type_identifier) @name.definition.struct
  type: (struct_type (field_declaration_list) @body)) @definition.struct

(type_spec
  name: (type_identifier) @name.definition.interface
  type: (interface_type . (_)? @body)) @definition.interface

(type_spec
  name: (type_identifier) @name.definition.type
  type: [
    (type_identifier) (qualified_type) (generic_type) (pointer_type) (function_type)
    (map_type) (slice_type) (array_type) (channel_type)
  ]) @definition.type

(type_alias name: (type_identifier) @name.definition.type) @definition.type

; interface methods
(interface_type
  (method_elem name: (field_identifier) @name.definition.method) @definition.method)

(call_expression
  function: [
    (identifier) @name.reference.call
    (selector_expression field: (field_identifier) @name.reference.call)
  ])

(import_spec path: (_) @import.module) @import.statement
