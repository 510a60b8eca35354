-- The only place that knows Neovim versions apart: 0.7 (Debian 12) to 0.11+.
local M = {}

M.uv = vim.uv or vim.loop

--- True when Neovim is at least `version` ("0.11").
function M.has(version)
  return vim.fn.has("nvim-" .. version) == 1
end

M.islist = vim.islist or vim.tbl_islist -- renamed in 0.10

--- The LSP clients named `name`, attached to `bufnr` when given.
function M.clients(name, bufnr)
  if vim.lsp.get_clients then -- 0.10+
    return vim.lsp.get_clients({ name = name, bufnr = bufnr })
  end
  local found = {}
  local all = bufnr and vim.lsp.buf_get_clients(bufnr) or vim.lsp.get_active_clients()
  for _, client in pairs(all) do
    if client.name == name then
      table.insert(found, client)
    end
  end
  return found
end

--- Sends a request; `handler(err, result)`.
function M.request(client, method, params, handler, bufnr)
  local function on_reply(err, result)
    handler(err, result)
  end
  if M.has("0.11") then
    return client:request(method, params, on_reply, bufnr)
  end
  return client.request(method, params, on_reply, bufnr)
end

local started = {} -- root_dir -> client id (0.7: clients are not listed before initialize)

--- 0.11+: registers the base config with vim.lsp.config (users may extend it there).
function M.register(name, config)
  if vim.lsp.config then
    vim.lsp.config(name, config)
  end
end

--- Starts (or reuses) the server for `bufnr` given a full client config with `root_dir`.
function M.start(config, bufnr)
  local registered = vim.lsp.config and vim.lsp.config[config.name]
  if registered then -- 0.11+: what vim.lsp.config holds (user overrides win), plus this root
    config = vim.tbl_deep_extend("force", config, registered, {
      root_dir = config.root_dir,
      cmd_cwd = config.cmd_cwd,
      workspace_folders = config.workspace_folders,
    })
  end
  if vim.lsp.start then -- 0.8+: reuses a client with the same name and root_dir
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = started[config.root_dir]
  local client = id and vim.lsp.get_client_by_id(id)
  if not client or client.is_stopped() then
    id = vim.lsp.start_client(config)
    started[config.root_dir] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

return M
