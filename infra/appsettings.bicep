// The function app's settings, written so that a redeployment never undoes an operator.
//
// A `Microsoft.Web/sites/config` 'appsettings' PUT replaces every setting of the site, so this module reads the
// settings the site has now (`list` of its config/appsettings, evaluated when this module runs, after the site
// exists) and writes
//
//     union(operatorDefaults, <the site's current settings>, deploymentOwned)
//
// (`union`: a later object's value wins). Hence:
//   - deploymentOwned: derived from what this deployment creates (storage, identity, Application Insights, the Key
//     Vault reference of each secret, the service URLs): set on every deployment; an operator's edit of one of
//     these is replaced, on purpose.
//   - operatorDefaults: operator-owned settings with a first value (the parameters of main.bicep): written only
//     where the site has no such setting yet, i.e. on the first deployment. After that the app setting is the
//     truth: `az functionapp config appsettings set` (or the portal) changes it and it stays changed.
//   - every other setting on the site (SYNC_PAUSED_TEMPLATES, SYNC_TWO_WAY, SYNC_DATAVERSE_CLIENT_IDS, ...) is
//     the operator's and is carried over as it is.
// Secrets are never app setting values: deploymentOwned holds `@Microsoft.KeyVault(SecretUri=...)` references that
// App Service resolves with the app's identity (Key Vault Secrets User on the vault; main.bicep).

@description('The function app (created by main.bicep before this module runs)')
param appName string

@description('Settings the deployment owns: written on every deployment')
param deploymentOwned object

@description('Operator-owned settings with their first values: written only where the site has none yet')
param operatorDefaults object

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: appName
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  properties: union(operatorDefaults, list('${app.id}/config/appsettings', '2024-04-01').properties, deploymentOwned)
}
