// Function App (Flex Consumption, Python 3.11) with a user-assigned managed identity, its storage
// account (host storage + sync state tables), and Application Insights.
// The identity must also be an application user in Dataverse and a Microsoft Entra application in
// F&O (README, "Deploy"): those are tenant steps Bicep cannot do.
targetScope = 'resourceGroup'

@description('Name prefix for every resource')
param name string = 'loyaltysync'
param location string = resourceGroup().location
@description('https://<org>.crm.dynamics.com')
param dataverseUrl string
@description('https://<env>.operations.dynamics.com')
param commerceUrl string
@description('Comma-separated legal entities for company-specific templates; empty = all from LegalEntities')
param legalEntities string = ''
@allowed(['delete', 'ignore'])
param deletePolicy string = 'delete'
@allowed(['commerce_wins', 'dataverse_wins'])
param conflictPolicy string = 'commerce_wins'

var suffix = uniqueString(resourceGroup().id, name)
var storageName = toLower(take('${name}${suffix}', 24))
var deploymentContainer = 'app-package'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-id-${suffix}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
  }
  resource blobService 'blobServices' = {
    name: 'default'
    resource container 'containers' = { name: deploymentContainer }
  }
}

// Blob (deployment package, host), Queue (host) and Table (sync state) data roles for the identity.
var roles = [
  'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
]
resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(storage.id, identity.id, role)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  tags: { 'azd-service-name': 'api' }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'DATAVERSE_URL', value: dataverseUrl }
        { name: 'COMMERCE_URL', value: commerceUrl }
        { name: 'SYNC_STORAGE_TABLE_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'SYNC_STORAGE_QUEUE_ENDPOINT', value: storage.properties.primaryEndpoints.queue }
        { name: 'SYNC_QUEUE_PREFIX', value: 'loyaltysync' }
        { name: 'SYNC_CONFLICT_POLICY', value: conflictPolicy }
        { name: 'SYNC_LEGAL_ENTITIES', value: legalEntities }
        { name: 'SYNC_DELETE_POLICY', value: deletePolicy }
      ]
    }
  }
  dependsOn: [ roleAssignments ]
}

output functionAppName string = app.name
output managedIdentityClientId string = identity.properties.clientId
