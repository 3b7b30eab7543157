-- webidfederationdata and onbehalfof, the newest STRUCTs of AWS's table.
SELECT useridentity.type,
       useridentity.sessioncontext.webidfederationdata.federatedprovider AS provider,
       useridentity.onbehalfof.identitystorearn AS identity_store,
       addendum.reason AS addendum_reason
FROM cloudtrail_logs
WHERE useridentity.sessioncontext.webidfederationdata.federatedprovider IS NOT NULL
   OR useridentity.onbehalfof.userid IS NOT NULL
