-- sleepy-repo for Neovim: starts `sleepy-repo lsp` for a buffer's git repository and adds
-- :SleepyAsk {question}, :SleepyRefresh, :SleepyStatus and :SleepyContext {question}.
--
--   require("sleepy_repo").setup({
--     cmd = { "sleepy-repo", "lsp" }, -- the server command
--     backend = nil,        -- "static" | "anthropic" | "local"; nil: .sleepy/config.toml
--     idle_seconds = nil,   -- idle time before sleep-time work; nil: the server's default
--     filetypes = { ... },  -- where to attach (Python, JS/TS, Go, Rust by default)
--     context_budget = nil, -- token budget of :SleepyContext; nil: the server's default
--   })
--
-- Hover (`K`, vim.lsp.buf.hover) shows the notes; code lenses come with vim.lsp.codelens.
-- Works on Neovim 0.7 (vim.lsp.start_client), 0.8-0.10 (vim.lsp.start) and 0.11+
-- (vim.lsp.config, so `vim.lsp.config("sleepy_repo", {...})` can override settings too).
local compat = require("sleepy_repo.compat")

local M = {}

M.name = "sleepy_repo"

local defaults = {
  cmd = { "sleepy-repo", "lsp" },
  backend = nil,
  idle_seconds = nil,
  filetypes = {
    "python",
    "javascript",
    "javascriptreact",
    "typescript",
    "typescriptreact",
    "go",
    "rust",
  },
  context_budget = nil,
}

M.options = vim.deepcopy(defaults)

--- The directory holding `.git` (a directory, or a file in worktrees) above `path`, or nil.
function M.find_root(path)
  if not path or path == "" then
    return nil
  end
  local dir = vim.fn.fnamemodify(path, ":p")
  if vim.fn.isdirectory(dir) == 0 then
    dir = vim.fn.fnamemodify(dir, ":h")
  end
  dir = dir:gsub("/+$", "")
  while dir ~= "" do
    if compat.uv.fs_stat(dir .. "/.git") then
      return dir
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      break
    end
    dir = parent
  end
  if compat.uv.fs_stat("/.git") then
    return "/"
  end
  return nil
end

local function buffer_root(bufnr)
  if vim.bo[bufnr].buftype ~= "" then
    return nil
  end
  return M.find_root(vim.api.nvim_buf_get_name(bufnr))
end

--- `initializationOptions` from the options; unset ones are left out (nil when none is set).
function M.init_options()
  local options = {}
  if M.options.backend then
    options.backend = M.options.backend
  end
  if M.options.idle_seconds then
    options.idleSeconds = M.options.idle_seconds
  end
  return next(options) and options or nil
end

local show_result -- defined below

local function client_config(root)
  local config = {
    name = M.name,
    cmd = M.options.cmd,
    init_options = M.init_options(),
    -- the code lenses run the server's sleepy.notes; show what it returns
    commands = {
      ["sleepy.notes"] = function(command, ctx)
        local client = vim.lsp.get_client_by_id(ctx.client_id)
        if client then
          compat.request(client, "workspace/executeCommand", command, show_result("notes"),
            ctx.bufnr)
        end
      end,
    },
  }
  if root then
    config.root_dir = root
    config.cmd_cwd = root
    config.workspace_folders = { { uri = vim.uri_from_fname(root), name = root } }
  end
  return config
end

--- Starts the server for `bufnr`'s repository (or reuses it) and attaches the buffer.
--- Returns the client id, or nil when the buffer is not inside a git repository.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local root = buffer_root(bufnr)
  if not root then
    return nil
  end
  return compat.start(client_config(root), bufnr)
end

local function setup_autostart()
  compat.register(M.name, client_config(nil))
  local group = vim.api.nvim_create_augroup("sleepy_repo", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.options.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  -- buffers opened before setup()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr)
      and vim.tbl_contains(M.options.filetypes, vim.bo[bufnr].filetype) then
      M.attach(bufnr)
    end
  end
end

--- The running client for the current buffer, else the one whose root holds the cwd,
--- else the only one. Returns client, or nil and a message.
function M.client()
  local own = compat.clients(M.name, vim.api.nvim_get_current_buf())
  if #own > 0 then
    return own[1]
  end
  local all = compat.clients(M.name)
  local cwd_root = M.find_root(vim.fn.getcwd())
  for _, client in ipairs(all) do
    if client.config.root_dir == cwd_root then
      return client
    end
  end
  if #all == 1 then
    return all[1]
  end
  if #all == 0 then
    return nil, "sleepy-repo: no server running; open a file inside a git repository"
  end
  return nil, "sleepy-repo: several servers running; run this from a buffer of the repository"
end

--- Sends `method` to the server; `callback(err, result)` (err is a string or nil).
function M.request(method, params, callback)
  local client, message = M.client()
  if not client then
    callback(message, nil)
    return
  end
  compat.request(client, method, params, function(err, result)
    if err then
      callback(type(err) == "table" and (err.message or vim.inspect(err)) or tostring(err), nil)
    else
      callback(nil, result)
    end
  end, vim.api.nvim_get_current_buf())
end

--- Runs one of the server's `sleepy.*` commands through workspace/executeCommand.
function M.execute(command, arguments, callback)
  M.request("workspace/executeCommand", {
    command = command,
    arguments = arguments or {},
  }, callback)
end

function M.ask(question, callback)
  M.execute("sleepy.ask", { question }, callback)
end

function M.refresh(callback)
  M.execute("sleepy.refresh", {}, callback)
end

function M.status(callback)
  M.execute("sleepy.status", {}, callback)
end

--- The custom `sleepy/context` request: {schema_version, question, budget, tokens, items}.
function M.context(question, budget, callback)
  local params = { question = question }
  if budget or M.options.context_budget then
    params.budget = budget or M.options.context_budget
  end
  M.request("sleepy/context", params, callback)
end

-- Rendering results ------------------------------------------------------------------------

local function is_list(value)
  return type(value) == "table" and compat.islist(value)
end

local function dump(value, indent, lines)
  local keys = vim.tbl_keys(value)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  for _, key in ipairs(keys) do
    local item = value[key]
    local label = is_list(value) and "-" or (tostring(key) .. ":")
    if type(item) == "table" and next(item) ~= nil then
      table.insert(lines, indent .. label)
      dump(item, indent .. "  ", lines)
    elseif type(item) == "table" then
      table.insert(lines, indent .. label .. " " .. (is_list(item) and "[]" or "{}"))
    elseif item == vim.NIL then
      table.insert(lines, indent .. label .. " null")
    else
      table.insert(lines, indent .. label .. " " .. tostring(item))
    end
  end
end

local function citation(item)
  if type(item) ~= "table" then
    return tostring(item)
  end
  local path = item.path or "?"
  local line = item.start_line or item.line
  local last = item.end_line
  if line and last and last ~= line then
    return string.format("%s:%s-%s", path, line, last)
  end
  return line and string.format("%s:%s", path, line) or path
end

local function one_line(text)
  return (tostring(text):gsub("%s+", " "))
end

--- One markdown line per context item: `path:lines · symbol (kind): text`.
local function item_lines(items, lines)
  for _, item in ipairs(items) do
    local head = citation(item)
    if type(item.symbol) == "string" then
      head = head .. " · " .. item.symbol
    end
    local flags = ""
    if item.generated == true then
      flags = flags .. " (generated)"
    end
    if item.stale == true then
      flags = flags .. " ⚠ stale"
    end
    local text = one_line(item.text or "")
    if type(item.question) == "string" then
      text = "Q: " .. one_line(item.question) .. " " .. text
    end
    local line = string.format("- %s (%s)%s: %s", head, tostring(item.kind or "?"), flags, text)
    table.insert(lines, line)
  end
end

local function context_lines(context, lines)
  table.insert(lines, string.format("## Context (%s of %s tokens)",
    tostring(context.tokens), tostring(context.budget)))
  table.insert(lines, "")
  item_lines(context.items or {}, lines)
end

--- Markdown lines for a command result: a string as is; an `ask` result as its answer (or
--- message) and the cited context; a `sleepy/context` result as its items; `markdown` or
--- `text` fields; else the table laid out as `key: value` lines.
function M.render(result)
  if result == nil or result == vim.NIL then
    return { "(no result)" }
  end
  if type(result) ~= "table" then
    return vim.split(tostring(result), "\n", { plain = true })
  end
  local lines = {}
  if type(result.context) == "table" and is_list(result.context.items) then
    local text = type(result.answer) == "string" and result.answer or result.message
    vim.list_extend(lines, vim.split(tostring(text or ""), "\n", { plain = true }))
    table.insert(lines, "")
    context_lines(result.context, lines)
    return lines
  end
  if is_list(result.items) then
    context_lines(result, lines)
    return lines
  end
  if is_list(result.notes) then -- sleepy.notes: a module's notes
    table.insert(lines, "# " .. tostring(result.path))
    for _, note in ipairs(result.notes) do
      table.insert(lines, "")
      local title = string.format("## %s %s", tostring(note.backend), tostring(note.model or ""))
      table.insert(lines, vim.trim(title))
      table.insert(lines, "")
      item_lines(note.items or {}, lines)
    end
    return lines
  end
  for _, key in ipairs({ "markdown", "answer", "text", "message" }) do
    if type(result[key]) == "string" then
      lines = vim.split(result[key], "\n", { plain = true })
      if is_list(result.citations) and #result.citations > 0 then
        table.insert(lines, "")
        table.insert(lines, "Sources:")
        for _, item in ipairs(result.citations) do
          table.insert(lines, "- " .. citation(item))
        end
      end
      return lines
    end
  end
  dump(result, "", lines)
  return lines
end

--- Shows `lines` in the scratch buffer `sleepy-repo://<kind>` (created once, in a split).
function M.show(kind, lines)
  local name = "sleepy-repo://" .. kind
  local bufnr = vim.fn.bufnr(name)
  if bufnr == -1 then
    bufnr = vim.api.nvim_create_buf(true, true)
    vim.api.nvim_buf_set_name(bufnr, name)
    vim.bo[bufnr].filetype = "markdown"
    vim.bo[bufnr].bufhidden = "hide"
  end
  vim.bo[bufnr].modifiable = true
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, lines)
  vim.bo[bufnr].modifiable = false
  if vim.fn.bufwinnr(bufnr) == -1 then
    vim.cmd("botright split")
    vim.api.nvim_win_set_buf(0, bufnr)
  end
  return bufnr
end

local function shower(kind)
  return vim.schedule_wrap(function(err, result)
    if err then
      vim.notify(err, vim.log.levels.ERROR)
      return
    end
    M.show(kind, M.render(result))
  end)
end

show_result = function(kind)
  local show = shower(kind)
  return function(err, result)
    show(type(err) == "table" and (err.message or vim.inspect(err)) or err, result)
  end
end

local function setup_commands()
  vim.api.nvim_create_user_command("SleepyAsk", function(args)
    M.ask(args.args, shower("ask"))
  end, { nargs = "+", desc = "sleepy-repo: ask about this repository" })
  vim.api.nvim_create_user_command("SleepyRefresh", function()
    M.refresh(vim.schedule_wrap(function(err, result)
      if err then
        vim.notify(err, vim.log.levels.ERROR)
      else
        vim.notify("sleepy-repo: " .. table.concat(M.render(result), " "), vim.log.levels.INFO)
      end
    end))
  end, { nargs = 0, desc = "sleepy-repo: refresh the notes now" })
  vim.api.nvim_create_user_command("SleepyStatus", function()
    M.status(shower("status"))
  end, { nargs = 0, desc = "sleepy-repo: modules, fresh and stale notes" })
  vim.api.nvim_create_user_command("SleepyContext", function(args)
    M.context(args.args, nil, shower("context"))
  end, { nargs = "+", desc = "sleepy-repo: the notes packed for a question (JSON fields)" })
end

function M.setup(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  setup_commands()
  setup_autostart()
end

return M
